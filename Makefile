# The two commands of the README, plus the benchmark and the audit tools.
.PHONY: demo test bench audit sbom reproducible

demo:
	bash .ci/demo

test:
	bash .ci/test

bench:
	bash .ci/bench

# Refresh AUDIT.md (CI fails when it is out of date).
audit:
	bash .ci/audit > AUDIT.md

# CycloneDX SBOM of the release binary, llama.cpp included: target/sbom/.
sbom:
	bash .ci/sbom

# Two clean release builds in different directories; prints both hashes, fails if they differ.
reproducible:
	bash .ci/reproducible
