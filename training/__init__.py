"""Roost training: Keras transfer learning, evaluation, ONNX export and publishing."""
