# syntax=docker/dockerfile:1
# The emostream image: the package, every model it loads (they ship inside registry wheels) and Ray,
# for the KubeRay RayService, RayJobs and RayCluster in k8s/. One file, two builds:
#
#   CPU:  docker build -t emostream:0.1.0 .
#   CUDA: docker build -t emostream-cuda:0.1.0 \
#           --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 --build-arg DS_ACCELERATOR=cuda .
#
# The CUDA build differs only in the torch wheel (PyTorch's CUDA wheels carry the CUDA runtime
# libraries as nvidia-* wheels, so a GPU node needs only its driver, which the NVIDIA device plugin
# mounts) and in DeepSpeed's accelerator. Pick the cuXYZ index your driver supports; use BASE_IMAGE
# to build on another Debian-based Python 3.11 image (e.g. a company base).
# Nothing is downloaded when a container starts: HF_HUB_OFFLINE=1 and the models are in the wheels.
#
# Layers, from the least to the most often changed: torch, the locked dependencies
# (requirements/image.lock, `make lock`), DeepSpeed with its CPU op, then the package's code.

ARG BASE_IMAGE=python:3.11-slim-bookworm
# DeepSpeed's accelerator where the image runs: cpu (its CPU op is built in), or cuda for the CUDA
# build. DeepSpeed loads an op built into the package only when the package was built for the
# accelerator it finds.
ARG DS_ACCELERATOR=cpu

FROM ${BASE_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
# PyTorch's CPU wheels, asked for by name (as the Makefile does): a bare torch requirement pulls
# PyPI's CUDA build with GBs of nvidia wheels.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG DEEPSPEED_VERSION=0.19.8
ARG DS_ACCELERATOR
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# g++ builds DeepSpeed's CPU op below; the runtime stage has no compiler.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# setuptools and wheel: DeepSpeed is built from its source without build isolation (against this
# torch). Then torch, from the chosen index; never torchvision: PyPI's builds break the CPU torch
# and then transformers.
RUN pip install --upgrade pip==26.3 setuptools==84.2.1 wheel==0.48.0 \
 && pip install --index-url ${TORCH_INDEX} torch==${TORCH_VERSION}
WORKDIR /src
# Every other dependency, pinned, before any code: a code change rebuilds only the last layers.
COPY requirements/image.lock ./
RUN pip install -r image.lock
# DeepSpeed compiles its CPU shared-memory collective (deepspeed_shm_comm, used by every CPU
# training run) on first use unless it is built into the package; pods have no compiler and a
# read-only root. The CPU image builds it here, from DeepSpeed's source against this torch
# (tests/test_image.py runs this same command in a clean venv); the ARGs are in the environment
# of RUN, and DeepSpeed's build reads DS_ACCELERATOR from there. The CUDA image (NCCL, no CPU
# collective) takes DeepSpeed's wheel.
RUN if [ "${DS_ACCELERATOR}" = cpu ]; then \
      DS_BUILD_SHM_COMM=1 pip install --no-build-isolation --no-binary deepspeed deepspeed==${DEEPSPEED_VERSION} \
      && python -c "from deepspeed.git_version_info import installed_ops as ops, accelerator_name as name; \
assert name == 'cpu' and ops['deepspeed_shm_comm'], (name, ops)"; \
    else \
      pip install deepspeed==${DEEPSPEED_VERSION}; \
    fi
# Packages used for the model files inside them, installed --no-deps: [tool.emostream] no-deps in
# pyproject.toml says why, and `dependencies` there lists what they really need.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['tool']['emostream']['no-deps']))" \
      > no-deps.txt \
 && pip install --no-deps -r no-deps.txt
COPY emostream ./emostream
# The package itself; its dependencies are all in the lock (the insightface extra included).
RUN pip install --no-deps .

FROM ${BASE_IMAGE} AS runtime
ARG DS_ACCELERATOR
# libgl1 and libglib2.0-0 (and the X11 libraries libgl1 brings): OpenCV's cv2 module links them. wget: KubeRay's exec
# probes call it on Ray containers. libgomp1: numba's OpenMP threading layer (librosa uses numba), and DeepSpeed's CPU op.
# hadolint ignore=DL3008
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
# libraries), the CLI does not start, or (CPU image) DeepSpeed would compile its op at run time:
# this stage has no compiler, so build_shm_op() only succeeds with the prebuilt op.
RUN python -c "import emostream.serve.app, ray, torch, mediapipe, faster_whisper" && emostream --help >/dev/null \
 && if [ "${DS_ACCELERATOR}" = cpu ]; then \
      python -c "from deepspeed.comm.torch import build_shm_op; assert build_shm_op() is not None"; \
    fi \
 && rm -rf /tmp/*
USER 1000:1000
ENTRYPOINT ["emostream"]
CMD ["--help"]
