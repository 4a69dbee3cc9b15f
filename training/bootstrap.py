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
import sys

from cups_ros.train.cli import add_training_arguments, run_training_command
from cups_ros.train.run import bootstrap


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_training_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_training_command(
        "bootstrap", build_parser(), argv, lambda args, config, labels: bootstrap(labels, config, args.output)
    )


if __name__ == "__main__":
    sys.exit(main())
