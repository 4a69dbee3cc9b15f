"""``cups-ros bag-info`` and ``cups-ros bag-extract``: look into a stereo bag, unpack it to PNGs.

bag-extract writes, under OUT_DIR:

    left/<stamp_ns>.png, right/<stamp_ns>.png   the rectified pair, RGB PNG, 19-digit stamp names
    camera.json                                 CameraModel fields of the first extracted frame
    frames.json                                 {"bag", "frames": [{index, stamp_ns, left, right}]};
                                                a frame whose camera differs from camera.json also
                                                carries its own "camera"

Every file is written atomically, so an interrupted run leaves only whole files; running it again
skips the frames whose two PNGs exist.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import cv2

from cups_ros.core.config import load_config
from cups_ros.core.files import write_bytes_atomic, write_json_atomic
from cups_ros.io.bag import BagError, StereoBagReader, StereoInputConfig, bag_summary


def _load_stereo_config(path: Path | None) -> StereoInputConfig:
    return load_config(StereoInputConfig, path) if path is not None else StereoInputConfig()


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="stereo input YAML (topics, sync tolerance); default: the values of config/stereo_input.yaml",
    )


def register(subparsers: Any) -> None:
    """Adds bag-info and bag-extract to the ``cups-ros`` command."""
    info = subparsers.add_parser(
        "bag-info",
        help="topics, message counts and the stereo sync report of a ROS 2 bag",
        description="Lists the bag's topics and, for the configured stereo topics, how many "
        "synchronized frames it yields and what is skipped and why (decodes every image).",
    )
    info.add_argument("bag", type=Path, help="bag folder, or a .db3 / .mcap file")
    _add_config_argument(info)
    info.add_argument("--no-sync", action="store_true", help="list topics only, skip the stereo pass")
    info.add_argument("--quiet", action="store_true", help="no progress bar")
    info.set_defaults(run=run_bag_info)

    extract = subparsers.add_parser(
        "bag-extract",
        help="write a stereo bag's synchronized frames as PNGs plus camera.json (resumable)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    extract.add_argument("bag", type=Path, help="bag folder, or a .db3 / .mcap file")
    extract.add_argument("out_dir", type=Path, help="output folder (created)")
    _add_config_argument(extract)
    extract.add_argument(
        "--every", type=int, default=1, help="keep every N-th synchronized frame (default 1)"
    )
    extract.add_argument("--quiet", action="store_true", help="no progress bar")
    extract.set_defaults(run=run_bag_extract)


def run_bag_info(args: argparse.Namespace) -> int:
    config = _load_stereo_config(args.config)
    print(bag_summary(args.bag).format())
    if args.no_sync:
        return 0
    try:
        reader = StereoBagReader(args.bag, config, progress=not args.quiet)
    except BagError as error:
        print(f"stereo: not readable with this configuration: {error}")
        return 0
    for _ in reader:
        pass
    tolerance_ms = config.sync_tolerance_s * 1e3
    print(f"stereo (tolerance {tolerance_ms:g} ms):\n{reader.report.summary()}")
    return 0


def _write_png(path: Path, rgb: Any) -> None:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"OpenCV could not encode {path}")
    write_bytes_atomic(path, encoded.tobytes())


def run_bag_extract(args: argparse.Namespace) -> int:
    if args.every < 1:
        raise ValueError(f"--every must be at least 1, got {args.every}")
    config = _load_stereo_config(args.config)
    reader = StereoBagReader(args.bag, config, progress=not args.quiet)
    out_dir: Path = args.out_dir
    first_camera = None
    entries: list[dict[str, Any]] = []
    written = existing = 0
    for frame in reader:
        if frame.index % args.every:
            continue
        name = f"{frame.stamp_ns:019d}.png"
        entry: dict[str, Any] = {
            "index": frame.index,
            "stamp_ns": frame.stamp_ns,
            "left": f"left/{name}",
            "right": f"right/{name}",
        }
        if first_camera is None:
            first_camera = frame.camera
            write_json_atomic(out_dir / "camera.json", dataclasses.asdict(frame.camera))
        elif frame.camera != first_camera:
            entry["camera"] = dataclasses.asdict(frame.camera)
        entries.append(entry)
        left_path, right_path = out_dir / entry["left"], out_dir / entry["right"]
        if left_path.is_file() and right_path.is_file():
            existing += 1
            continue
        _write_png(left_path, frame.left)
        _write_png(right_path, frame.right)
        written += 1
    if first_camera is None:
        raise BagError(f"{args.bag}: no synchronized stereo frame\n{reader.report.summary()}")
    write_json_atomic(out_dir / "frames.json", {"bag": str(args.bag), "frames": entries})
    print(reader.report.summary())
    print(
        f"{out_dir}: {written} frames written, {existing} already there, {len(entries)} listed in frames.json"
    )
    return 0
