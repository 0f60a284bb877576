"""Roost: image classification from Keras transfer learning to a batching ONNX Runtime server.

`roost.contract` is what training writes and the server reads; `roost.client` talks to a running
server; `roost.cli` is the `roost` command.
"""
