"""Benchmark entry points for a repository checkout: ``python -m benchmarks`` (same as
``jaxbasics bench``) and ``python benchmarks/plot.py RESULTS.json OUT_DIR``."""
