# Roost serving images, two targets from one file (docs/operations.md):
#   docker build -t roost:cpu .                  the default (last) stage: Python + onnxruntime
#   docker build -t roost:gpu --target gpu .     CUDA 13 + cuDNN 9 runtime + onnxruntime-gpu
# podman builds OCI images by default, which have no HEALTHCHECK: add `--format docker`.
# Every dependency installs at its version in deploy/constraints.txt.
# The shipped model_repo/ is baked in at /models; mount a volume on /models to serve others.

# Any Debian-like image with python3 (`python` on PATH), its venv module and CA certificates:
# the tests build on a local Debian base made with debootstrap (tests/deploy/base_image.sh).
ARG PYTHON_IMAGE=docker.io/library/python:3.12-slim-bookworm
# The CUDA major onnxruntime-gpu links (libcudart.so.13, libcublas.so.13) and cuDNN 9;
# tests/deploy/test_dependencies.py checks this tag against the pinned wheel's metadata.
# Ubuntu 24.04's python3 is 3.12, like the CPU image.
ARG CUDA_IMAGE=docker.io/nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

# ---- wheel: Roost's own wheel, built once for both targets (no optional extras) ------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY roost/ roost/
COPY service/ service/
# The `roost` command lists the training commands; they need the [train] extra to run.
COPY training/ training/
RUN python -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .
COPY deploy/constraints.txt /wheels/constraints.txt

# ---- cpu-venv: the serving dependencies in a virtualenv, copied whole into the runtime ------
FROM ${PYTHON_IMAGE} AS cpu-venv
COPY --from=wheel /wheels /wheels
# The grpc extra (~30 MB) so that ROOST_GRPC_PORT serves the Open Inference Protocol over gRPC;
# the s3 extra (~25 MB) so that ROOST_MODEL_REPO can be a bucket.
RUN python -m venv /opt/roost \
    && /opt/roost/bin/pip install --no-cache-dir --constraint /wheels/constraints.txt \
        "$(ls /wheels/roost-*.whl)[cpu,grpc,s3]" \
    && /opt/roost/bin/python -c "import onnxruntime, service.app, roost.cli, service.protocols.oip.grpc_server, tritonclient.grpc.service_pb2_grpc, boto3"

# ---- gpu-base: the CUDA runtime with a Python interpreter -----------------------------------
FROM ${CUDA_IMAGE} AS gpu-base
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# ---- gpu-venv: roost[gpu], whose onnxruntime-gpu is the only ONNX Runtime ------------------
# The build fails when a library that the CUDA provider links does not resolve in this image
# (a CUDA or cuDNN major that the base lacks); libcuda.so.1 is the driver's, mounted at run time.
FROM gpu-base AS gpu-venv
COPY --from=wheel /wheels /wheels
RUN set -eux; \
    python3 -m venv /opt/roost; \
    /opt/roost/bin/pip install --no-cache-dir --constraint /wheels/constraints.txt \
        "$(ls /wheels/roost-*.whl)[gpu,grpc,s3]"; \
    /opt/roost/bin/python -c "import onnxruntime as o, pynvml, service.app, boto3; \
assert 'CUDAExecutionProvider' in o.get_available_providers(), o.get_available_providers()"; \
    /opt/roost/bin/python -m service.runtime.cuda_libraries

# ---- gpu: the CUDA serving image (docker build --target gpu) --------------------------------
FROM gpu-base AS gpu
RUN groupadd --system --gid 10001 roost \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/roost \
        --shell /usr/sbin/nologin roost
COPY --from=gpu-venv /opt/roost /opt/roost
COPY model_repo/ /models/
ENV PATH=/opt/roost/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ROOST_HOST=0.0.0.0 \
    ROOST_PORT=8000 \
    ROOST_MODEL_REPO=/models \
    ROOST_USE_CUDA=true \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \
    ORT_DISABLE_TELEMETRY=1
EXPOSE 8000
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ROOST_PORT', '8000'), timeout=2)"
ENTRYPOINT ["roost"]
CMD ["serve"]

# ---- cpu: the default serving image ---------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
RUN groupadd --system --gid 10001 roost \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/roost \
        --shell /usr/sbin/nologin roost
COPY --from=cpu-venv /opt/roost /opt/roost
COPY model_repo/ /models/
ENV PATH=/opt/roost/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ROOST_HOST=0.0.0.0 \
    ROOST_PORT=8000 \
    ROOST_MODEL_REPO=/models \
    ROOST_USE_CUDA=false \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \
    ORT_DISABLE_TELEMETRY=1
EXPOSE 8000
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ROOST_PORT', '8000'), timeout=2)"
ENTRYPOINT ["roost"]
CMD ["serve"]
