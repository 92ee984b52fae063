"""Benchmark tasks (HumanEval, HumanEval+, MBPP+, MBPP), the `seed_dev` set, stage `benchmarks`."""
