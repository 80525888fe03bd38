# The two commands of the README, plus the benchmark and the audit tools.
# `make check` is the fast tier (under a minute on a warm tree), for every edit.
.PHONY: demo test check bench audit sbom reproducible

demo:
	bash .ci/demo

test:
	bash .ci/test

check:
	bash .ci/check

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
