"""The GPU proof: `bash bench/gpu/run.sh` on the GPU machine (docs/gpu.md)."""
