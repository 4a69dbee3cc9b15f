"""Stage 3: self-training of a bootstrap model (CUPS): EMA teacher, TTA self-labels, heads only.

    python training/self_train.py MODEL.pt LABELS --output RUN [--config config/train.yaml]
        [--set key=value ...]

Only the images of LABELS (a pseudo-label dataset, or --ground-truth SIM --split train for the
oracle) are used; the targets are the teacher's own confident predictions. Resumes from
RUN/checkpoints/last.ckpt. Writes RUN/model.pt (the EMA teacher, which is what serves).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cups_ros.core.config import apply_overrides
from cups_ros.train.config import TrainConfig, load_train_config
from cups_ros.train.dataset import ground_truth_set, pseudo_label_set
from cups_ros.train.run import self_train

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="bootstrap model file (RUN/model.pt)")
    parser.add_argument("labels", type=Path, nargs="?", help="pseudo-label dataset folder (its images)")
    parser.add_argument("--ground-truth", type=Path, default=None, help="simulator root (its images)")
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
        model = self_train(args.model, labels, config, args.output)
    except (ValueError, OSError) as error:
        if args.verbose:
            raise
        print(f"self_train: error: {error}", file=sys.stderr)
        return 2
    print(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
