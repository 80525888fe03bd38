# The two commands of the README, plus the benchmark.
.PHONY: demo test bench

demo:
	bash .ci/demo

test:
	bash .ci/test

bench:
	bash .ci/bench
