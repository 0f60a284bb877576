#!/usr/bin/env bash
# The one GPU command (issue 13; docs/gpu.md has the device calls around it).
#
# On the GPU machine, in the call after the last wheel chunk (bench/gpu/stage.sh prints the calls):
#   bash bench/gpu/run.sh                 # installs the staged wheels once, then measures
# Here, on a CPU-only machine (what tests/bench/test_gpu_script.py runs):
#   bash bench/gpu/run.sh --dry-run --model-repo R --model M --out DIR
# Everything after the script name goes to `python -m bench.gpu` (its --help lists it).
# Results: report.md, report.json, pytest.txt, py-spy.txt and servers.log under $OUT (the device
# tool's output folder), else under bench/results/gpu.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
out=${OUT:-bench/results/gpu}
extra=()
case " $* " in
  *" --dry-run "*) ;;
  *)
    # Install once per warm machine: /tmp/gpu-chunks holds every chunk copied by earlier calls.
    if [ ! -e /tmp/site/.roost-installed ]; then
      if [ -x .gpu/bin/install.sh ] || [ -f .gpu/bin/install.sh ]; then
        bash .gpu/bin/install.sh
        touch /tmp/site/.roost-installed
      else
        echo "no .gpu/bin/install.sh: carry .gpu/bin with the last chunk (docs/gpu.md)" >&2
      fi
    fi
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    # nvImageCodec finds libnvjpeg (the nvidia-nvjpeg wheel) here.
    for lib in /tmp/site/nvidia/cu13/lib /tmp/site/nvidia/cu12/lib /tmp/site/nvidia/nvjpeg/lib; do
      if [ -d "$lib" ]; then export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}; fi
    done
    if [ -d /tmp/roost-gpu-inputs ]; then extra+=(--inputs /tmp/roost-gpu-inputs); fi
    ;;
esac
exec "$PY" -m bench.gpu --out "$out" ${extra[@]+"${extra[@]}"} "$@"
