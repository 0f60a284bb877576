"""Roost serving: model repository, ONNX Runtime sessions, dynamic batching, HTTP API."""
