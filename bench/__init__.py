"""Cerebelum's benchmarks: each module runs one with one command and writes JSON to results/.

Benchmarks are not tests: they print figures and never assert on wall-clock time.
"""
