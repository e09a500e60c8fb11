"""Benchmarks of regression-lab against plain baselines and yardsticks: run them with python scripts/benchmark.py."""
