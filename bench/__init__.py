"""Benchmarks: run with `make bench`. Never part of the timed test suite."""
