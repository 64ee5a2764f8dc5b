"""`emostream schema`: the JSON Schema files of the wire contracts."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emostream.cli.common import DEPLOYMENTS_DIR, Commands
from emostream.contracts import SCHEMA_VERSION, WIRE_CONTRACTS

SCHEMA_DIR = DEPLOYMENTS_DIR / "schemas"


def schema_documents() -> dict[str, str]:
    """File name → JSON Schema text of every wire contract."""
    documents = {}
    for name, model in WIRE_CONTRACTS.items():
        schema = model.model_json_schema()
        schema["$id"] = f"https://emostream.dev/schemas/{SCHEMA_VERSION}/{name}.schema.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        documents[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return documents


def add_schema(commands: Commands) -> None:
    schema = commands.add_parser("schema", help="write the JSON Schemas of the wire contracts",
                                 description="Write the JSON Schema of every wire contract (media segment headers, "
                                             "utterance emotion event, dead-letter event).")
    schema.add_argument("--out", default=str(SCHEMA_DIR), metavar="DIR",
                        help="folder for the *.schema.json files (default: deployments/schemas)")
    schema.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the files differ from the contracts")
    schema.set_defaults(func=cmd_schema)


def cmd_schema(args: argparse.Namespace) -> int:
    out = Path(args.out)
    drifted = []
    for file_name, text in schema_documents().items():
        path = out / file_name
        if args.check:
            if not path.exists() or path.read_text() != text:
                drifted.append(str(path))
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if drifted:
        print("JSON Schemas differ from the contracts; run `emostream schema`:\n  " + "\n  ".join(drifted), file=sys.stderr)
        return 1
    return 0
