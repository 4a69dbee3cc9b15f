"""Panoptic pseudo-labels with pseudo-tracks from stereo video (stage 1 of CUPS), no human labels.

    python training/pseudo_label.py INPUT [INPUT ...] --output DIR [--split train] [--shard i/N]
        [--config config/pseudo_label.yaml] [--semantics PROTOTYPES.npz] [--steps fit,frames,finalize]

INPUT: ROS 2 bags (sqlite3 or mcap), simulator sequence folders, or a folder of them (``--split``
keeps ``<split>_*``). Killed runs resume: finished frames and sequences are kept. With ``--shard i/N``
each of N processes (a job array, torchrun, SLURM) labels its block of every sequence's frames; the
finalize step then needs all shards' frames and splits the sequences among the shards. Sharded runs
should fit the semantic prototypes once first (``--steps fit``) or share them with ``--semantics``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cups_ros.pseudo.pipeline import Shard, load_pseudo_label_config, run_pseudo_labelling
from cups_ros.pseudo.sources import open_sequences

STEPS = ("fit", "frames", "finalize")


def parse_steps(text: str) -> tuple[str, ...]:
    steps = tuple(step.strip() for step in text.split(",") if step.strip())
    unknown = sorted(set(steps) - set(STEPS))
    if unknown or not steps:
        raise argparse.ArgumentTypeError(f"--steps takes a comma list of {', '.join(STEPS)}; got {text!r}")
    return steps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", type=Path, nargs="+", help="bags, simulator sequences or folders of them")
    parser.add_argument("--output", type=Path, required=True, help="pseudo-label dataset folder")
    parser.add_argument("--split", default=None, help="keep <split>_* sequences of input folders")
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML (default: config/pseudo_label.yaml values)"
    )
    parser.add_argument("--semantics", type=Path, default=None, help="semantic prototypes fitted elsewhere")
    parser.add_argument("--shard", type=Shard.parse, default=Shard(), help="i/N: this process's share")
    parser.add_argument("--steps", type=parse_steps, default=STEPS, help="comma list of fit,frames,finalize")
    parser.add_argument("--limit-sequences", type=int, default=None, help="first N sequences only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_pseudo_label_config(args.config)
        sequences = open_sequences(args.inputs, args.split)[: args.limit_sequences]
        run_pseudo_labelling(
            sequences, args.output, config, args.shard, args.steps, args.semantics, not args.no_progress
        )
    except (ValueError, OSError) as error:
        if args.verbose:
            raise
        print(f"pseudo_label: error: {error}", file=sys.stderr)
        return 2
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
