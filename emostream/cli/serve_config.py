"""`emostream serve-config`: the Serve config files of the deployment profiles, generated from the app."""

from __future__ import annotations

import argparse
import sys

from emostream.cli.common import DEPLOYMENTS_DIR, Commands

# The Serve config is rendered from the Serve app, which imports Ray: imported inside cmd_serve_config, so that
# the other commands start fast.


def add_serve_config(commands: Commands) -> None:
    serve_config = commands.add_parser("serve-config", help="write the Serve config files of the deployment profiles",
                                       description="Generate deployments/serve-local.yaml and serve-cluster.yaml from the "
                                                   "Serve application (replicas, resources, autoscaling per profile), and "
                                                   "the RayService's serveConfigV2 in k8s/base/rayservice-serve-config.yaml.")
    serve_config.add_argument("--profile", action="append", choices=["local", "cluster"], help="only this profile (repeatable)")
    serve_config.add_argument("--check", action="store_true", help="fail if the files differ from what would be written")
    serve_config.set_defaults(func=cmd_serve_config)


def cmd_serve_config(args: argparse.Namespace) -> int:
    from emostream.serve.config import render, render_rayservice

    files = []
    for profile in args.profile or ("local", "cluster"):
        files.append((DEPLOYMENTS_DIR / f"serve-{profile}.yaml", render(profile)))
        if profile == "cluster":  # the Kubernetes RayService serves the same config
            files.append((DEPLOYMENTS_DIR.parent / "k8s" / "base" / "rayservice-serve-config.yaml", render_rayservice(files[-1][1])))
    for path, text in files:
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(f"{path} is out of date: run `emostream serve-config`", file=sys.stderr)
                return 1
            continue
        path.write_text(text)
        print(f"wrote {path}")
    return 0
