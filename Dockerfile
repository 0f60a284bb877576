# syntax=docker/dockerfile:1
# Roost serving images, two targets from one file (docs/operations.md):
#   docker build -t roost:cpu .                  the default (last) stage: python slim + onnxruntime
#   docker build -t roost:gpu --target gpu .     CUDA 12 + cuDNN 9 runtime + onnxruntime-gpu
# The shipped model_repo/ is baked in at /models; mount a volume on /models to serve others.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm
# Ubuntu 24.04's python3 is 3.12, like the CPU image; onnxruntime-gpu 1.20+ wants CUDA 12, cuDNN 9.
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# ---- wheel: Roost's own wheel, built once for both targets (no optional extras) ------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY roost/ roost/
COPY service/ service/
# The `roost` command lists the training commands; they need the [train] extra to run.
COPY training/ training/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- cpu-venv: the serving dependencies in a virtualenv, copied whole into the runtime ------
FROM ${PYTHON_IMAGE} AS cpu-venv
COPY --from=wheel /wheels /wheels
# The grpc extra (~30 MB) so that ROOST_GRPC_PORT serves the Open Inference Protocol over gRPC.
RUN python -m venv /opt/roost \
    && /opt/roost/bin/pip install --no-cache-dir "$(ls /wheels/roost-*.whl)[grpc]" \
    && /opt/roost/bin/python -c "import onnxruntime, service.app, roost.cli, service.protocols.oip.grpc_server, tritonclient.grpc.service_pb2_grpc"

# ---- gpu-base: the CUDA runtime with a Python interpreter -----------------------------------
FROM ${CUDA_IMAGE} AS gpu-base
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# ---- gpu-venv: roost[gpu], then onnxruntime-gpu's files over the CPU wheel's ------------------
# Both wheels install the `onnxruntime` package; uninstalling the CPU one removes shared files,
# so onnxruntime-gpu is reinstalled afterwards and the CUDA provider is checked to be there.
FROM gpu-base AS gpu-venv
COPY --from=wheel /wheels /wheels
RUN set -eux; \
    python3 -m venv /opt/roost; \
    wheel="$(ls /wheels/roost-*.whl)"; \
    /opt/roost/bin/pip install --no-cache-dir "${wheel}[gpu,grpc]"; \
    ort_gpu="$(/opt/roost/bin/pip show onnxruntime-gpu | sed -n 's/^Version: //p')"; \
    /opt/roost/bin/pip uninstall -y onnxruntime; \
    /opt/roost/bin/pip install --no-cache-dir --force-reinstall --no-deps \
        "onnxruntime-gpu==${ort_gpu}"; \
    /opt/roost/bin/python -c "import onnxruntime as o, pynvml, service.app; \
assert 'CUDAExecutionProvider' in o.get_available_providers(), o.get_available_providers()"

# ---- gpu: the CUDA serving image (docker build --target gpu) --------------------------------
FROM gpu-base AS gpu
RUN groupadd --system --gid 10001 roost \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin roost
COPY --from=gpu-venv /opt/roost /opt/roost
COPY model_repo/ /models/
ENV PATH=/opt/roost/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ROOST_HOST=0.0.0.0 \
    ROOST_PORT=8000 \
    ROOST_MODEL_REPO=/models \
    ROOST_USE_CUDA=true \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1
EXPOSE 8000
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ROOST_PORT', '8000'), timeout=2)"
ENTRYPOINT ["roost"]
CMD ["serve"]

# ---- cpu: the default serving image ---------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
RUN groupadd --system --gid 10001 roost \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin roost
COPY --from=cpu-venv /opt/roost /opt/roost
COPY model_repo/ /models/
ENV PATH=/opt/roost/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ROOST_HOST=0.0.0.0 \
    ROOST_PORT=8000 \
    ROOST_MODEL_REPO=/models \
    ROOST_USE_CUDA=false \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1
EXPOSE 8000
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ROOST_PORT', '8000'), timeout=2)"
ENTRYPOINT ["roost"]
CMD ["serve"]
