"""`emostream broker start|stop|status`: the embedded Kafka broker (Tansu) for local runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from emostream.cli.common import Commands, settings_from
from emostream.kafka.broker import EmbeddedBroker
from emostream.kafka.clients import admin
from emostream.settings import Settings


def add_broker(commands: Commands) -> None:
    broker = commands.add_parser("broker", help="start, stop or check the embedded Kafka broker",
                                 description="Manage the embedded Kafka broker (Tansu, in memory, on 127.0.0.1) "
                                             "for local runs; `start` also creates the media, emotions and "
                                             "dead-letter topics.")
    broker.add_argument("action", choices=["start", "stop", "status"],
                        help="start: run it in the background and create the topics; stop: end it by its pid; "
                             "status: say whether it runs (exit 3 when not) and list its topics")
    broker.add_argument("--port", type=int, help="port on 127.0.0.1 (default: broker.port, 9092)")
    broker.add_argument("--state-dir", metavar="DIR", help="where the pid file and log go (default: broker.state_dir)")
    broker.add_argument("--partitions", type=int, help="partitions of created topics (default: kafka.partitions)")
    broker.set_defaults(func=cmd_broker)


def embedded_broker(args: argparse.Namespace, settings: Settings) -> EmbeddedBroker:
    kafka = settings.kafka if args.partitions is None else settings.kafka.model_copy(update={"partitions": args.partitions})
    return EmbeddedBroker(
        port=args.port or settings.broker.port,
        state_dir=Path(args.state_dir or settings.broker.state_dir),
        kafka=kafka,
        start_timeout=settings.broker.start_timeout_seconds,
    )


def cmd_broker(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    broker = embedded_broker(args, settings)
    if args.action == "start":
        state = broker.start()
        print(f"embedded Kafka broker (Tansu) running: pid {state.pid}, bootstrap servers {state.bootstrap_servers}")
        print(f"topics: {broker.kafka.media_topic}, {broker.kafka.emotions_topic}, {broker.kafka.deadletter_topic}")
        return 0
    if args.action == "stop":
        print("stopped" if broker.stop() else f"no broker recorded in {broker.state_dir} is running")
        return 0
    state = broker.state()
    if state is None:
        print(f"not running (state directory {broker.state_dir})")
        return 3
    client = admin(broker.kafka)
    try:
        topics = sorted(client.list_topics())
    finally:
        client.close()
    print(f"running: pid {state.pid}, bootstrap servers {state.bootstrap_servers}, topics: {', '.join(topics) or '-'}")
    return 0
