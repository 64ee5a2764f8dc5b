"""The command line: every option explained, and the broker, publish, consume and tail commands for real."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from emostream.cli import build_parser, main
from emostream.kafka.broker import free_port

EMOSTREAM = [sys.executable, "-m", "emostream.cli"]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_of_every_command_has_help() -> None:
    parsers = {"emostream": build_parser(), **subcommands()}
    assert {"schema", "broker", "publish", "consume", "tail", "demo"} <= set(parsers)
    for name, parser in parsers.items():
        assert parser.description or name == "emostream", name
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and len(action.help) > 10, f"{name}: {action.dest} has no help"


@pytest.mark.parametrize("command", ["", "schema", "broker", "publish", "consume", "tail", "demo"])
def test_help_runs(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command.split(), "--help"])
    assert exit_.value.code == 0
    assert "usage: emostream" in capsys.readouterr().out


def test_schema_check_passes_on_the_committed_files() -> None:
    assert main(["schema", "--check"]) == 0


def test_schema_check_fails_on_drift(tmp_path: Path) -> None:
    assert main(["schema", "--out", str(tmp_path)]) == 0
    (tmp_path / "dead-letter-event.schema.json").write_text("{}")
    assert main(["schema", "--check", "--out", str(tmp_path)]) == 1


def test_bad_setting_is_reported_without_a_traceback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("EMOSTREAM_KAFKA__PARTITIONS", "zero")
    assert main(["broker", "status", "--state-dir", "/nonexistent"]) == 2
    assert "kafka.partitions = 'zero'" in capsys.readouterr().err


@pytest.mark.broker
def test_broker_publish_consume_and_tail_from_the_command_line(tmp_path: Path, librivox: list[Path]) -> None:
    port, state = free_port(), tmp_path / "state"
    common = ["--state-dir", str(state), "--port", str(port)]

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*EMOSTREAM, *args], capture_output=True, text=True, timeout=timeout)

    assert run("broker", "status", *common).returncode == 3
    started = run("broker", "start", *common, "--partitions", "2")
    assert started.returncode == 0, started.stderr
    try:
        status = run("broker", "status", *common)
        assert "running" in status.stdout and "emostream.media" in status.stdout
        again = run("broker", "start", *common)  # idempotent: reuses the running broker
        assert again.returncode == 0 and json.loads((state / "broker.json").read_text())["port"] == port
        servers = f"127.0.0.1:{port}"
        published = run("publish", str(librivox[0]), "--stream-id", "cli-1", "--quiet", "--bootstrap-servers", servers)
        assert published.returncode == 0, published.stderr
        assert "published 4 segments (7.1 s of media" in published.stdout
        consumed = run("consume", "--until-end-of", "cli-1", "--timeout", "60", "--bootstrap-servers", servers)
        assert consumed.returncode == 0, consumed.stderr
        assert "cli-1 seq 3:" in consumed.stdout and "end of stream at 7.10 s" in consumed.stdout
        bad = run("publish", str(tmp_path / "missing.mp4"), "--stream-id", "x", "--bootstrap-servers", servers)
        assert bad.returncode == 1 and "missing.mp4: cannot open as media" in bad.stderr
        tail = run("tail", "emostream.media", "--from-beginning", "--max-events", "1", "--timeout", "30",
                   "--bootstrap-servers", servers)
        assert tail.returncode == 0 and "not JSON" in tail.stdout  # media segments are not events
    finally:
        stopped = run("broker", "stop", *common)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert run("broker", "status", *common).returncode == 3
