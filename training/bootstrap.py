"""Stage 2: train the panoptic-tracking network on pseudo-labels (CUPS bootstrap), with Lightning.

    python training/bootstrap.py LABELS --output RUN [--config config/train.yaml] [--set key=value ...]
    python training/bootstrap.py --ground-truth SIM --split train --output RUN   (the oracle)

LABELS is a pseudo-label dataset (training/pseudo_label.py). With --ground-truth the same network is
trained on the simulator's own labels instead: the supervised upper bound. A killed run resumes
from RUN/checkpoints/last.ckpt when started again with the same arguments. Devices, DDP and
precision come from the config's ``trainer`` section (for example ``--set trainer.devices=4
--set trainer.strategy=ddp --set trainer.precision=bf16-mixed``). Writes RUN/model.pt.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cups_ros.core.config import apply_overrides
from cups_ros.train.config import TrainConfig, load_train_config
from cups_ros.train.dataset import ground_truth_set, pseudo_label_set
from cups_ros.train.run import bootstrap

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("labels", type=Path, nargs="?", help="pseudo-label dataset folder")
    parser.add_argument("--ground-truth", type=Path, default=None, help="simulator root: train on its labels")
    parser.add_argument("--split", default="train", help="simulator split with --ground-truth")
    parser.add_argument("--output", type=Path, required=True, help="run folder")
    parser.add_argument(
        "--config", type=Path, default=REPOSITORY_ROOT / "config" / "train.yaml", help="training YAML"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key.sub=value")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if (args.labels is None) == (args.ground_truth is None):
        parser.error("give LABELS or --ground-truth SIM (one of them)")
    try:
        config = apply_overrides(TrainConfig, load_train_config(args.config), args.overrides)
        labels = (
            ground_truth_set(args.ground_truth, args.split)
            if args.ground_truth
            else pseudo_label_set(args.labels)
        )
        model = bootstrap(labels, config, args.output)
    except (ValueError, OSError) as error:
        if args.verbose:
            raise
        print(f"bootstrap: error: {error}", file=sys.stderr)
        return 2
    print(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
