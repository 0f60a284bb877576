#!/usr/bin/env bash
# Here (the CPU machine), before a GPU session's device calls: stage everything the one
# command needs, then print those calls. Usage, from the project root: bash bench/gpu/stage.sh
#
# - wheels, via ../shared/gpu/stage-device-wheels (onnxruntime-gpu and the service's
#   dependencies), plus what the GPU run adds: the test tools (pinned to this venv's versions),
#   nvidia-ml-py (GPU metrics), nvImageCodec for CUDA 13 and its nvJPEG library, py-spy (where
#   the server's threads wait, dumped during each load level);
# - the input photos (512px and 1024px sets from bench/inputs.py) in .gpu/inputs: the GPU
#   machine has neither scikit-image nor the camera photos package.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PY=${PYTHON:-.venv/bin/python}
pins=()
for package in pytest pluggy iniconfig packaging pygments pytest-asyncio asgi-lifespan sniffio; do
  version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$package")
  pins+=("$package==$version")
done
../shared/gpu/stage-device-wheels "${pins[@]}" nvidia-ml-py nvidia-nvimgcodec-cu13 nvidia-nvjpeg py-spy
"$PY" -m bench.gpu --export-inputs .gpu/inputs --sets 512px,1024px
n=$(ls -d .gpu/c* | wc -l)
echo
echo "Device calls (run tool), back to back; each within the machine's idle time of the last."
echo "A call carries the checkout too (64 MiB in all): first, here, move model_repo/ out of it:"
echo "  mv model_repo /tmp/roost-model-repo-aside"
for i in $(seq 1 "$n"); do
  echo "  carry [\".gpu/c$i\"]  command: mkdir -p /tmp/gpu-chunks && cp .gpu/c$i/* /tmp/gpu-chunks/"
done
echo "Then, here: mv /tmp/roost-model-repo-aside model_repo; and the last call:"
echo "  carry [\".gpu/inputs\", \".gpu/bin\"]  command: rm -rf /tmp/roost-gpu-inputs && cp -r .gpu/inputs /tmp/roost-gpu-inputs && bash bench/gpu/run.sh"
echo "Then read \$OUT/report.md. A later call on the same warm machine: bash bench/gpu/run.sh --no-tests (installs nothing again)."
