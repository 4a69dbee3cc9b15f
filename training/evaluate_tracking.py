"""Scores of the online tracker on the simulator's split: STQ / AQ, HOTA and identity switches.

    python training/evaluate_tracking.py --sim SIM --split val [--flow none,gt,dis]
        [--model MODEL.pt] [--embeddings none|random] [--config TRACKER.yaml] [--set key=value ...]
        [--seed 0] [--limit-sequences N] [--output results.json]

Without --model the tracker is fed each frame's ground-truth thing segments as detections, with their
ids shuffled per frame (track ids do not leak) and empty or random embeddings, so only the
association is measured; classes are ground truth, no class matching. With --model (a .pt model file)
the tracker follows the network's predictions (cups_ros.runtime Predictor, torch engine) and the
scores come after the split-wide Hungarian matching of its pseudo-classes (cups_ros.eval.split; PQ
and mIoU too), HOTA and switches on the thing instances after that matching.

--flow: comma list of flow sources, one evaluation each: none (constant-velocity mask prediction),
gt (the simulator's forward flow of the previous frame, inverted) or dis (OpenCV DIS between the
images). Reported: STQ, AQ, IoU (= SQ), HOTA / DetA / AssA / IDF1 / MOTA (trackeval, class-agnostic
over the thing classes), identity switches (a ground-truth track whose matched predicted id, at
IoU >= 0.5, changes between frames where it is matched) per 100 frames, and the tracker's median
update time.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from cups_ros.core.config import apply_overrides, load_config
from cups_ros.core.files import write_json_atomic
from cups_ros.tracking import TrackerConfig
from cups_ros.tracking.evaluation import (
    FLOW_SOURCES,
    FlowSource,
    evaluate_ground_truth_tracking,
    evaluate_network_tracking,
)

EMBEDDING_DIMENSION = 16  # of the random embeddings; the network's default embedding size
COLUMNS = ("STQ", "AQ", "IoU", "HOTA", "DetA", "AssA", "IDF1", "MOTA")


def parse_flows(text: str) -> list[FlowSource]:
    flows = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(flows) - set(FLOW_SOURCES))
    if unknown or not flows:
        raise argparse.ArgumentTypeError(
            f"--flow takes a comma list of {', '.join(FLOW_SOURCES)}; got {text!r}"
        )
    return flows  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sim", type=Path, required=True, help="simulator root")
    parser.add_argument("--split", default="val", help="sequences <split>_* under --sim")
    parser.add_argument("--flow", type=parse_flows, default=["dis"], help="comma list of none,gt,dis")
    parser.add_argument("--model", type=Path, default=None, help="track this network (.pt) instead of GT")
    parser.add_argument(
        "--embeddings",
        choices=("none", "random"),
        default="none",
        help="ground-truth input only: no embeddings, or random unit vectors (uninformative)",
    )
    parser.add_argument("--config", type=Path, default=None, help="tracker YAML (TrackerConfig fields)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="tracker override key=value"
    )
    parser.add_argument("--seed", type=int, default=0, help="id shuffling and random embeddings")
    parser.add_argument("--limit-sequences", type=int, default=None)
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the results")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def tracker_config(path: Path | None, overrides: list[str]) -> TrackerConfig:
    config = load_config(TrackerConfig, path) if path is not None else TrackerConfig()
    return apply_overrides(TrackerConfig, config, overrides) if overrides else config


def format_row(name: str, scores: dict[str, Any]) -> str:
    def cell(key: str) -> str:
        value = scores.get(key)
        return f"{100 * value:7.1f}" if isinstance(value, float) else f"{'-':>7s}"

    switches = scores.get("id_switches_per_100_frames")
    milliseconds = scores.get("tracker_median_ms")
    return (
        f"{name:10s} "
        + " ".join(cell(key) for key in COLUMNS)
        + f" {switches:9.1f}"
        + (f" {milliseconds:8.2f}" if milliseconds is not None else f" {'-':>8s}")
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    from cups_ros.sim.dataset import load_split

    try:
        config = tracker_config(args.config, args.overrides)
        sequences = load_split(args.sim, args.split)[: args.limit_sequences]
        if not sequences:
            raise FileNotFoundError(f"no {args.split}_* simulator sequences under {args.sim}")
        results: dict[str, dict[str, Any]] = {}
        if args.model is None:
            dimension = EMBEDDING_DIMENSION if args.embeddings == "random" else 0
            for flow in args.flow:
                results[flow] = evaluate_ground_truth_tracking(sequences, config, flow, dimension, args.seed)
        else:
            from cups_ros.runtime.engines import open_engine
            from cups_ros.runtime.predictor import Predictor

            predictor = Predictor(open_engine(args.model, "torch"))
            network_config = predictor.engine.network_config
            for flow in args.flow:
                results[flow] = evaluate_network_tracking(
                    sequences,
                    lambda image: predictor(image).prediction,
                    network_config.num_classes,
                    network_config.thing_classes,
                    config,
                    flow,
                )
    except (ValueError, OSError) as error:
        if args.verbose:
            raise
        print(f"evaluate_tracking: error: {error}", file=sys.stderr)
        return 2
    source = (
        f"model {args.model}"
        if args.model is not None
        else f"ground-truth instances ({args.embeddings} embeddings)"
    )
    frames = next(iter(results.values())).get("frames")
    print(f"{source}, {len(sequences)} sequences of {args.sim}/{args.split}_*, {frames} frames")
    print(f"{'flow':10s} " + " ".join(f"{c:>7s}" for c in COLUMNS) + f" {'IDsw/100':>9s} {'ms/frame':>8s}")
    for flow, scores in results.items():
        print(format_row(flow, scores))
    if args.output is not None:
        write_json_atomic(
            args.output,
            {
                "sim": str(args.sim),
                "split": args.split,
                "sequences": [sequence.name for sequence in sequences],
                "input": "model" if args.model is not None else "ground_truth",
                "model": None if args.model is None else str(args.model),
                "embeddings": args.embeddings if args.model is None else "network",
                "tracker": vars(config),
                "results": results,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
