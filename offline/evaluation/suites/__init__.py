"""Benchmark suites: one module per published protocol (see offline/benchmark.py)."""
