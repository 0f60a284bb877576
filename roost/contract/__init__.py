"""The model-repository contract: what training writes and the server reads.

One home for every rule of docs/model-repository.md: model names and version folders
(`layout`), card.json (`card`), labels.txt (`labels`), the model.onnx input/output rules
(`onnx_io`), how image bytes become model input (`images`), bounded reads of repository files
(`files`) and atomic publishing (`publish`).
Depends on numpy, Pillow and pydantic only; never on the server or on training.
"""
