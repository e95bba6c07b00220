"""Benchmark harness and cost model."""
