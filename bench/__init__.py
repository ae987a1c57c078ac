"""Benchmarks: `make bench` (`python -m bench`); see docs/performance.md."""
