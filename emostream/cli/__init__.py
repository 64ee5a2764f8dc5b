"""The `emostream` command line: the top-level parser and `main`.

Each command lives in its own module of this package with its arguments beside it: `add_<command>(commands)`
declares the sub-command and `cmd_<command>(args)` runs it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from emostream.cli.analyze import add_analyze
from emostream.cli.broker import add_broker
from emostream.cli.consume import add_consume, add_tail
from emostream.cli.demo import add_demo
from emostream.cli.publish import add_publish
from emostream.cli.run import add_backfill, add_run
from emostream.cli.schema import add_schema
from emostream.cli.serve_config import add_serve_config
from emostream.cli.train import add_evaluate, add_train
from emostream.settings import SettingsError

# In the order `emostream --help` lists them.
COMMANDS = (add_schema, add_broker, add_publish, add_consume, add_analyze, add_run, add_backfill, add_train, add_evaluate,
            add_serve_config, add_tail, add_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emostream",
        description="Score the emotion of every utterance in live call and meeting media streams.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML settings file (default: $EMOSTREAM_CONFIG; "
                        "EMOSTREAM_* variables override it)")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="how much the library logs to stderr (default: WARNING)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except SettingsError as error:
        print(f"emostream: {error}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, TimeoutError, OSError) as error:
        print(f"emostream {args.command}: {error}", file=sys.stderr)
        return 1
