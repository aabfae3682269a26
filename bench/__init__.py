"""Throughput benchmarks: qscale against Celery, Dramatiq and RQ on the same brokers.

Not a test suite: `python -m bench.run` (or `make bench`) prints a table and writes
bench/results/. Every framework runs the same task bodies from `bench.workload`.
"""
