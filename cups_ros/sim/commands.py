"""``cups-ros sim``: render a split (or part of one) to a dataset folder, optionally a bag and a preview."""

from __future__ import annotations

import argparse
from pathlib import Path

from cups_ros.sim.config import load_sim_config
from cups_ros.sim.towns import TOWNS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="generate synthetic stereo driving sequences with exact ground truth",
        description="Renders a split into OUT_DIR/<split>_<index>/; resumable (finished frames are kept).",
    )
    parser.add_argument("out_dir", type=Path, help="output folder")
    parser.add_argument("--split", default="sample", help="train, val, test or sample (default sample)")
    parser.add_argument("--config", type=Path, default=None, help="sim YAML (default: built-in defaults)")
    parser.add_argument("--town", choices=sorted(TOWNS), default=None, help="override the split's towns")
    parser.add_argument(
        "--sequences", type=int, default=None, help="number of sequences (default: split size)"
    )
    parser.add_argument("--frames", type=int, default=None, help="frames per sequence (default: split's)")
    parser.add_argument(
        "--width", type=int, default=None, help="image width (height = width / 2 unless --height)"
    )
    parser.add_argument("--height", type=int, default=None, help="image height")
    parser.add_argument("--bag", action="store_true", help="also write <sequence>.bag ROS 2 bags")
    parser.add_argument(
        "--preview", action="store_true", help="also write preview.png and preview.mp4 per sequence"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cups_ros.sim.dataset import SimSequence, write_split

    config = load_sim_config(args.config)
    if args.width is not None or args.height is not None:
        width = args.width or config.rig.width
        height = args.height or width // 2
        config = config.with_resolution(width, height)
    if args.sequences is not None and args.sequences < 0:
        raise ValueError("--sequences must be >= 0")
    if args.frames is not None and args.frames < 1:
        raise ValueError("--frames must be >= 1")
    folders = write_split(
        args.out_dir,
        config,
        args.split,
        args.sequences,
        args.frames,
        args.town,
        show_progress=not args.no_progress,
    )
    for folder in folders:
        sequence = SimSequence(folder)
        if args.bag:
            bag_path = folder.with_suffix(".bag")
            if not bag_path.exists():
                from cups_ros.sim.bag import export_bag

                export_bag(bag_path, iter(sequence), sequence.camera)
        if args.preview:
            from cups_ros.sim.preview import write_preview

            write_preview(list(sequence), folder / "preview.png", folder / "preview.mp4", fps=config.rig.fps)
        print(folder)
    return 0
