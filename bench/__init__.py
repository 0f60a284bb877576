"""Roost benchmarks: a load generator, baselines measured in the same run, and a report."""
