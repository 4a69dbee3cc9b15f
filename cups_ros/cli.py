"""The ``cups-ros`` command: one subcommand per job; each stage registers its own."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Each module exposes register(subparsers) adding parsers whose default ``run`` takes the args.
COMMAND_MODULES = (
    "cups_ros.io.commands",
    "cups_ros.eval.commands",
    "cups_ros.sim.commands",
    "cups_ros.pipeline.replay",
    "cups_ros.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cups-ros",
        description="Unsupervised panoptic segmentation with tracked instances from stereo video.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue  # stage not built yet
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except (ValueError, OSError) as error:
        # Bad input gets one clear line, not a traceback; -v shows the traceback.
        if args.verbose:
            raise
        print(f"cups-ros {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
