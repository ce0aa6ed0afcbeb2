"""Throughput benchmarks (not part of the test suite): see cpu_default.py and gpu.py."""
