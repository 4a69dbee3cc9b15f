"""What the training command lines share: label and config arguments, error reporting."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from cups_ros.core.config import apply_overrides
from cups_ros.train.config import TrainConfig, load_train_config
from cups_ros.train.dataset import LabelSet, ground_truth_set, pseudo_label_set

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "train.yaml"


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """LABELS | --ground-truth SIM [--split], --output, --config, --set key=value, -v."""
    parser.add_argument("labels", type=Path, nargs="?", help="pseudo-label dataset folder")
    parser.add_argument("--ground-truth", type=Path, default=None, help="simulator root: its own labels")
    parser.add_argument("--split", default="train", help="simulator split with --ground-truth")
    parser.add_argument("--output", type=Path, required=True, help="run folder")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training YAML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key.sub=value")
    parser.add_argument("-v", "--verbose", action="store_true")


def run_training_command(
    name: str,
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    train: Callable[[argparse.Namespace, TrainConfig, LabelSet], Path],
) -> int:
    """Parses, loads config and labels, runs ``train``; bad input is one clear line (exit 2)."""
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if (args.labels is None) == (args.ground_truth is None):
        parser.error("give LABELS or --ground-truth SIM (one of them)")
    try:
        config = apply_overrides(TrainConfig, load_train_config(args.config), args.overrides)
        if args.ground_truth:
            labels = ground_truth_set(args.ground_truth, args.split)
        else:
            labels = pseudo_label_set(args.labels)
        model = train(args, config, labels)
    except (ValueError, OSError) as error:
        if args.verbose:
            raise
        print(f"{name}: error: {error}", file=sys.stderr)
        return 2
    print(model)
    return 0
