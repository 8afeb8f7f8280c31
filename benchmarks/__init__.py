"""Benchmark scripts kept with their results (``benchmarks/results``)."""
