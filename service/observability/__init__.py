"""Prometheus metrics: the service's own, live per-version figures, and GPU gauges."""
