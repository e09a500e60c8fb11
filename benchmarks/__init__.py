"""Benchmarks of regression-lab against plain PyTorch: run them with python scripts/benchmark.py."""
