"""The GPU proof of issue 13: `bash bench/gpu/run.sh` on the GPU machine (docs/gpu.md)."""
