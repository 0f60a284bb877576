"""Running one model version: ONNX Runtime sessions (CPU, CUDA), the batcher, the CPU gate,
scores, and image decoding (`decode/`)."""
