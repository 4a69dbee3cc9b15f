"""PQ and STQ over a long simulated drive, in windows, for replays with online learning on and off.

    cups-ros replay DRIVE.bag OFF.bag --model BOOT.pt
    cups-ros replay DRIVE.bag ON.bag --model BOOT.pt --online-learning --fit FIT
    python training/evaluate_drive.py --sim SIM/test_0000 --run off=OFF.bag --run on=ON.bag \\
        --model BOOT.pt --window 20 --output DIR

Reads the tracked panoptic topic of each replay bag, scores each window of frames against the
simulator's ground truth (Hungarian matching inside the window), and writes DIR/drive.json (per
window, per run, plus the largest shortfall of each run against the first) and DIR/drive.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cups_ros.core.files import write_json_atomic
from cups_ros.eval.drive import (
    evaluate_windows,
    plot_curves,
    published_share,
    read_panoptic_topic,
    windows_to_json,
)
from cups_ros.model.model_file import read_model_file
from cups_ros.sim.dataset import SimSequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sim", type=Path, required=True, help="the drive's simulator sequence folder")
    parser.add_argument(
        "--run", action="append", required=True, help="NAME=REPLAY_BAG (first: the reference)"
    )
    parser.add_argument(
        "--model", type=Path, required=True, help="the model the runs started from (its classes)"
    )
    parser.add_argument("--topic", default="/perception/panoptic")
    parser.add_argument("--window", type=int, default=20, help="frames per window")
    parser.add_argument("--output", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sequence = SimSequence(args.sim)
    config = read_model_file(args.model)["network_config"]
    num_classes, things = int(config["num_classes"]), list(config["thing_classes"])
    runs = {}
    report: dict = {"sim": str(args.sim), "window": args.window, "runs": {}}
    for entry in args.run:
        name, separator, bag = entry.partition("=")
        if not separator:
            raise SystemExit(f"--run {entry!r}: expected NAME=REPLAY_BAG")
        predictions = read_panoptic_topic(bag, args.topic)
        windows = evaluate_windows(sequence, predictions, num_classes, things, args.window)
        runs[name] = windows
        report["runs"][name] = {
            "bag": bag,
            "published_share": published_share(sequence, predictions),
            "windows": windows_to_json(windows),
        }
    reference_name = next(iter(runs))
    reference = runs[reference_name]
    print(f"{'window':>10} " + " ".join(f"{n + ' PQ':>9} {n + ' STQ':>9}" for n in runs))
    for position, window in enumerate(reference):
        cells = " ".join(
            f"{100 * runs[n][position].scores['PQ']:9.1f} {100 * runs[n][position].scores['STQ']:9.1f}"
            for n in runs
        )
        print(f"{window.first_frame:>4}-{window.last_frame:<5} {cells}")
    for name, windows in runs.items():
        gaps = [100 * (w.scores["PQ"] - r.scores["PQ"]) for w, r in zip(windows, reference, strict=True)]
        report["runs"][name]["largest_pq_shortfall_vs_" + reference_name] = -min(gaps)
        report["runs"][name]["last_window_pq_gain_vs_" + reference_name] = gaps[-1]
        print(
            f"{name}: largest PQ shortfall vs {reference_name} {-min(gaps):.2f} points, "
            f"last window {gaps[-1]:+.2f}"
        )
    args.output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.output / "drive.json", json.loads(json.dumps(report)))
    plot_curves(runs, args.output / "drive.png")
    print(f"wrote {args.output / 'drive.json'} and {args.output / 'drive.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
