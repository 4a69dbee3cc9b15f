"""Stage 3: self-training of a bootstrap model (CUPS): EMA teacher, TTA self-labels, heads only.

    python training/self_train.py MODEL.pt LABELS --output RUN [--config config/train.yaml]
        [--set key=value ...]

Only the images of LABELS (a pseudo-label dataset, or --ground-truth SIM --split train for the
oracle) are used; the targets are the teacher's own confident predictions. Resumes from
RUN/checkpoints/last.ckpt. Writes RUN/model.pt (the EMA teacher, which is what serves).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cups_ros.train.cli import add_training_arguments, run_training_command
from cups_ros.train.run import self_train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="bootstrap model file (RUN/model.pt)")
    add_training_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_training_command(
        "self_train",
        build_parser(),
        argv,
        lambda args, config, labels: self_train(args.model, labels, config, args.output),
    )


if __name__ == "__main__":
    sys.exit(main())
