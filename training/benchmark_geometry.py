"""Timings of the geometry stage at 512x1024 on a fixed number of CPU threads, and the KITTI 2015 D1.

    python training/benchmark_geometry.py [--data ../shared/data] [--threads 2] [--repeats 7]

Timing input, resized to 1024x512 (only the size and the disparity range matter much for speed):
stereo on the KITTI 2015 pair 000046; flow on the consecutive frames 000139_10/11; the frame pair is
000046 and the same pair zoomed by 4 % about its centre (forward motion: the data holds no
consecutive stereo pairs). D1 is measured at KITTI's own 1242x375.
Each figure is the median over --repeats runs after one warm-up (min in brackets).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from cups_ros.core import StereoFrame, camera_model_from_kitti_calib
from cups_ros.geometry import (
    DisFlowEstimator,
    SequenceGeometry,
    SgbmDisparityEstimator,
    compute_disparity,
    compute_flow,
    compute_frame_pair_geometry,
    load_geometry_config,
)
from cups_ros.geometry.reference import kitti_d1, read_kitti_disparity, read_rgb
from cups_ros.geometry.timing import repeated_milliseconds

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1024, 512


def milliseconds(run: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, min) wall time in ms after one warm-up call."""
    return repeated_milliseconds(run, repeats)


def report(name: str, timing: tuple[float, float]) -> None:
    print(f"  {name:<52} {timing[0]:7.1f} ms  (min {timing[1]:.1f})")


def resized(image: np.ndarray, zoom: float = 1.0) -> np.ndarray:
    """image scaled to WIDTHxHEIGHT after cropping its central 1/zoom (zoom > 1: moving forward)."""
    height, width = image.shape[:2]
    crop_h, crop_w = round(height / zoom), round(width / zoom)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop = image[top : top + crop_h, left : left + crop_w]
    return cv2.resize(crop, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)


def kitti_frames(data: Path) -> tuple[StereoFrame, StereoFrame, StereoFrame, np.ndarray]:
    """The KITTI pair at native size, and at 1024x512 as frame t and (zoomed) frame t+1; its truth."""
    folder = data / "kitti2015_stereo_pair"
    camera = camera_model_from_kitti_calib(folder / "calib" / "calib_cam_to_cam_2011_09_26.txt")
    left, right = (
        read_rgb(folder / "image_2" / "000046_10.png"),
        read_rgb(folder / "image_3" / "000046_10.png"),
    )
    native = StereoFrame(left, right, camera, 0, sequence="kitti", index=46)
    small = camera.scaled(WIDTH, HEIGHT)
    frame_t = StereoFrame(resized(left), resized(right), small, 0, sequence="kitti", index=0)
    frame_t1 = StereoFrame(
        resized(left, 1.04), resized(right, 1.04), small, 100_000_000, sequence="kitti", index=1
    )
    return native, frame_t, frame_t1, read_kitti_disparity(folder / "disp_occ_0" / "000046_10.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPOSITORY_ROOT.parent / "shared" / "data")
    parser.add_argument("--config", type=Path, default=REPOSITORY_ROOT / "config" / "geometry.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if not (args.data / "kitti2015_stereo_pair").is_dir():
        print(f"KITTI data not found under {args.data}", file=sys.stderr)
        return 2
    cv2.setNumThreads(args.threads)
    config = load_geometry_config(args.config)
    native, frame_t, frame_t1, truth = kitti_frames(args.data)
    consecutive = args.data / "kitti2015_consecutive"
    image_t, image_t1 = (resized(read_rgb(consecutive / f"000139_{i}.png")) for i in ("10", "11"))
    stereo = config.stereo
    print(
        f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} threads, {WIDTH}x{HEIGHT}, "
        f"{stereo.disparity_range(WIDTH)} disparities, block {stereo.block_size}, "
        f"{'grey' if stereo.grey else 'RGB'}, DIS preset {config.flow.preset}; median of {args.repeats}"
    )

    print("stereo (one frame)")
    sgbm = SgbmDisparityEstimator(stereo)
    left, right = frame_t.left, frame_t.right
    report("SGBM 3-way, left view only", milliseconds(lambda: sgbm.estimate(left, right), args.repeats))
    no_check = replace(stereo, left_right_check=False)
    report(
        "SGBM + edge removal + occlusion, no LR check",
        milliseconds(lambda: compute_disparity(left, right, no_check, sgbm), args.repeats),
    )
    report(
        "SGBM + LR check + edge removal + occlusion",
        milliseconds(lambda: compute_disparity(left, right, stereo, sgbm), args.repeats),
    )
    stages = compute_disparity(left, right, stereo, sgbm).timings
    print("    stages: " + ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in stages.items()))

    print("optical flow (forward + backward + consistency)")
    for preset in ("ultrafast", "fast", "medium"):
        flow_config = replace(config.flow, preset=preset)
        dis = DisFlowEstimator(flow_config)
        report(
            f"DIS {preset}",
            milliseconds(lambda c=flow_config, e=dis: compute_flow(image_t, image_t1, c, e), args.repeats),
        )
    dis = DisFlowEstimator(config.flow)
    stages = compute_flow(image_t, image_t1, config.flow, dis).timings
    print("    stages: " + ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in stages.items()))

    print("frame pair (compute_frame_pair_geometry)")
    report(
        "both frames matched",
        milliseconds(
            lambda: compute_frame_pair_geometry(frame_t, frame_t1, config, stereo=sgbm, flow=dis),
            args.repeats,
        ),
    )
    sequence = SequenceGeometry(config, stereo=sgbm, flow=dis)
    geometry_t = sequence.frame_geometry(frame_t)
    report(
        "in a sequence (frame t reused, frame t+1 matched)",
        milliseconds(
            lambda: compute_frame_pair_geometry(
                frame_t, frame_t1, config, geometry_t=geometry_t, stereo=sgbm, flow=dis
            ),
            args.repeats,
        ),
    )
    pair = compute_frame_pair_geometry(frame_t, frame_t1, config, stereo=sgbm, flow=dis)
    print(
        "    stages: " + ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in pair.timings.items())
    )

    print("KITTI 2015 000046 at 1242x375, D1 over ground-truth pixels with an estimate")
    valid = truth > 0
    for name, variant in (
        ("no checks", replace(stereo, left_right_check=False, remove_edges=False)),
        ("LR check", replace(stereo, remove_edges=False)),
        ("LR check + edge removal (default)", stereo),
    ):
        result = compute_disparity(native.left, native.right, variant)
        score = kitti_d1(result.disparity, truth, valid)
        print(f"  {name:<36} D1 {100 * score.error_rate:5.2f} %  density {100 * score.density:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
