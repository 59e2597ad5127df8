"""Benchmarks of embrec against the alternatives; see docs/BENCHMARKS.md."""
