"""Realism and speed of cups_ros.sim: SGBM D1 (sim vs the real KITTI 2015 pair), DIS flow EPE, frames/s.

    python training/benchmark_sim.py [--frames 6] [--kitti ../shared/data/kitti2015_stereo_pair]

D1: share of evaluated pixels with |d - d_gt| > 3 px and > 5 % of d_gt, the same OpenCV StereoSGBM
settings on both; pixels where SGBM gives no disparity count as d = 0 (errors). KITTI is evaluated where
its GT is valid, the simulator where the GT depth is finite (not sky).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from cups_ros.sim.config import SimConfig
from cups_ros.sim.generate import SequenceGenerator, sequence_seed
from cups_ros.sim.textures import texture_bank

DEFAULT_KITTI = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti2015_stereo_pair"


def sgbm_disparity(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    block = 5
    matcher = cv2.StereoSGBM_create(
        minDisparity=0,
        numDisparities=128,
        blockSize=block,
        P1=8 * 3 * block**2,
        P2=32 * 3 * block**2,
        disp12MaxDiff=1,
        uniquenessRatio=10,
        speckleWindowSize=100,
        speckleRange=2,
        mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    )
    disparity = matcher.compute(left, right).astype(np.float32) / 16.0
    return np.where(disparity > 0, disparity, 0.0)


def d1_error(estimate: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> float:
    error = np.abs(estimate - truth)
    bad = (error > 3.0) & (error > 0.05 * truth)
    return float(bad[valid].mean())


def kitti_d1(folder: Path) -> float:
    left = cv2.imread(str(folder / "image_2" / "000046_10.png"))
    right = cv2.imread(str(folder / "image_3" / "000046_10.png"))
    truth = (
        cv2.imread(str(folder / "disp_occ_0" / "000046_10.png"), cv2.IMREAD_UNCHANGED).astype(np.float32)
        / 256.0
    )
    return d1_error(sgbm_disparity(left, right), truth, truth > 0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=6, help="frames per town")
    parser.add_argument("--towns", nargs="+", default=["oldtown", "suburb", "downtown"])
    parser.add_argument("--kitti", type=Path, default=DEFAULT_KITTI)
    args = parser.parse_args()

    texture_bank()  # built once per process; not part of the per-frame cost
    config = SimConfig()
    d1_sim, epe_valid, epe_all, seconds, frames_done = [], [], [], 0.0, 0
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    for town_index, town in enumerate(args.towns):
        generator = SequenceGenerator(config, sequence_seed("test", 500 + town_index), town, args.frames)
        previous = None
        start = time.perf_counter()
        for frame in generator:
            seconds += time.perf_counter() - start
            frames_done += 1
            estimate = sgbm_disparity(
                cv2.cvtColor(frame.left, cv2.COLOR_RGB2BGR), cv2.cvtColor(frame.right, cv2.COLOR_RGB2BGR)
            )
            d1_sim.append(d1_error(estimate, frame.disparity, np.isfinite(frame.depth)))
            if previous is not None:
                grey = [cv2.cvtColor(f.left, cv2.COLOR_RGB2GRAY) for f in (previous, frame)]
                flow = dis.calc(grey[0], grey[1], None)
                endpoint = np.linalg.norm(flow - previous.flow, axis=2)
                epe_valid.append(float(endpoint[previous.flow_valid].mean()))
                epe_all.append(float(endpoint.mean()))
            previous = frame
            start = time.perf_counter()
    print(
        f"speed: {frames_done / seconds:.2f} frames/s ({seconds / frames_done:.3f} s/frame) for "
        f"{config.rig.width}x{config.rig.height} stereo pairs with all GT (render + GT, no disk I/O)"
    )
    sim = float(np.mean(d1_sim))
    print(
        f"SGBM D1 on simulated pairs ({frames_done} frames, towns {', '.join(args.towns)}): {100 * sim:.1f} %"
    )
    if (args.kitti / "image_2").is_dir():
        kitti = kitti_d1(args.kitti)
        print(f"SGBM D1 on the real KITTI 2015 pair 000046: {100 * kitti:.1f} %")
        print(f"ratio sim / KITTI: {sim / kitti:.2f} (target within 1/1.5 .. 1.5)")
    else:
        print(f"KITTI pair not found at {args.kitti}: no comparison")
    print(
        f"DIS optical flow EPE on simulated frames: {np.mean(epe_valid):.2f} px on non-occluded pixels, "
        f"{np.mean(epe_all):.2f} px on all pixels"
    )


if __name__ == "__main__":
    main()
