"""Scores of trained networks (and of the pseudo-labels they learnt from) on the simulator's split.

    python training/evaluate.py MODEL [MODEL ...] --sim SIM --split val [--backend torch|onnxruntime|tensorrt]
        [--labels PSEUDO_LABELS] [--output DIR] [--limit-sequences N]

MODEL: a model file (.pt, torch) or an exported .onnx / .engine (with --backend). Each is scored by
Hungarian matching of its classes to the ground-truth classes over the split (thing to thing),
then PQ / SQ / RQ (things, stuff), mIoU and STQ / AQ with instances linked into tracks over frames,
the same protocol as the pseudo-labels (--labels adds their row). Writes DIR/evaluation.json and
a montage per model (image | prediction | ground truth).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from cups_ros.core.files import write_json_atomic, write_png_atomic
from cups_ros.eval.network import evaluate_network, evaluate_pseudo_labels
from cups_ros.model.postprocess import PostProcessConfig
from cups_ros.runtime.engines import BACKENDS, open_engine
from cups_ros.runtime.predictor import Predictor
from cups_ros.sim.dataset import SimSequence, load_split
from cups_ros.train.run import class_overlay, prediction_overlay

COLUMNS = ("PQ", "PQ_things", "PQ_stuff", "SQ", "RQ", "mIoU", "STQ", "AQ")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", type=Path, nargs="*", help="model files (.pt) or exported .onnx / .engine")
    parser.add_argument("--sim", type=Path, required=True, help="simulator root")
    parser.add_argument("--split", default="val")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument(
        "--labels", type=Path, default=None, help="pseudo-labels of the same split: their row"
    )
    parser.add_argument("--output", type=Path, default=None, help="where evaluation.json and montages go")
    parser.add_argument("--limit-sequences", type=int, default=None)
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def montage(predictor: Predictor, sequences: list[SimSequence], rows: int = 3) -> np.ndarray:
    lines = []
    for sequence in sequences[:rows]:
        frame = sequence[len(sequence) // 2]
        predicted = prediction_overlay(frame.left, predictor(frame.left).prediction)
        lines.append(
            np.concatenate([frame.left, predicted, class_overlay(frame.left, frame.semantic)], axis=1)
        )
    return np.concatenate(lines, axis=0)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.models and args.labels is None:
        parser.error("give at least one MODEL or --labels")
    try:
        sequences = load_split(args.sim, args.split)[: args.limit_sequences]
        if not sequences:
            raise FileNotFoundError(f"no {args.split}_* simulator sequences under {args.sim}")
        results: dict[str, dict] = {}
        if args.labels is not None:
            results[f"pseudo-labels {args.labels}"] = evaluate_pseudo_labels(args.labels, sequences).summary()
        for model in args.models:
            predictor = Predictor(open_engine(model, args.backend), PostProcessConfig())
            config = predictor.engine.network_config
            scores = evaluate_network(
                lambda image, p=predictor: p(image).prediction,
                sequences,
                config.num_classes,
                config.thing_classes,
            )
            results[str(model)] = scores.summary()
            if args.output is not None:
                write_png_atomic(
                    args.output / f"montage_{model.parent.name}_{model.stem}.png",
                    montage(predictor, sequences),
                )
    except (ValueError, OSError) as error:
        if args.verbose:
            raise
        print(f"evaluate: error: {error}", file=sys.stderr)
        return 2
    print(f"{'':60s} " + " ".join(f"{c:>9s}" for c in COLUMNS))
    for name, summary in results.items():
        print(f"{name[-60:]:60s} " + " ".join(f"{100 * summary[c]:9.1f}" for c in COLUMNS))
    if args.output is not None:
        write_json_atomic(args.output / "evaluation.json", {"split": args.split, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
