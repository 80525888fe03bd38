# The two commands of the README, plus the benchmark.
.PHONY: demo test bench

demo:
	bash .ci/demo

test:
	bash .ci/test

bench:
	bash .ci/setup
	cargo test --release --features test-hooks --test bench -- --ignored --nocapture --test-threads=1
