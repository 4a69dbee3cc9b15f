"""EuRoC stereo video (real, ../shared/data/euroc_micro_stereo) read as rectified StereoFrames."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from cups_ros.io.euroc import (
    EurocError,
    EurocStereoReader,
    EurocStereoRectifier,
    read_euroc_sensor,
    read_euroc_stereo,
)


@pytest.fixture(scope="module")
def euroc(shared_data: Path) -> Path:
    root = shared_data / "euroc_micro_stereo"
    if not (root / "mav0").is_dir():
        pytest.skip(f"EuRoC micro sequence not found at {root}")
    return root


@pytest.fixture(scope="module")
def rectifier(euroc: Path) -> EurocStereoRectifier:
    return EurocStereoRectifier.from_files(euroc / "mav0/cam0/sensor.yaml", euroc / "mav0/cam1/sensor.yaml")


def test_sensor_file_is_read(euroc: Path) -> None:
    camera = read_euroc_sensor(euroc / "mav0/cam0/sensor.yaml")
    assert camera.resolution == (752, 480)
    assert camera.intrinsics == pytest.approx((458.654, 457.296, 367.215, 248.375))
    assert camera.distortion == pytest.approx((-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05))
    assert camera.T_BS.shape == (4, 4)
    assert camera.T_BS[0, 3] == pytest.approx(-0.0216401454975)


def test_rectified_camera_has_the_euroc_baseline(rectifier: EurocStereoRectifier) -> None:
    camera = rectifier.camera
    assert 0.10 < camera.baseline < 0.12
    assert (camera.width, camera.height) == (752, 480)
    assert camera.fx == camera.fy


def _median_row_offset(left: np.ndarray, right: np.ndarray) -> float:
    """Median |dy| of corners tracked left -> right, kept when the track returns within 0.5 px."""
    corners = cv2.goodFeaturesToTrack(left, 400, 0.01, 8)
    lk = {"winSize": (21, 21), "maxLevel": 3}
    matched, status, _ = cv2.calcOpticalFlowPyrLK(left, right, corners, None, **lk)
    back, back_status, _ = cv2.calcOpticalFlowPyrLK(right, left, matched, None, **lk)
    good = (status[:, 0] == 1) & (back_status[:, 0] == 1)
    good &= np.linalg.norm(back - corners, axis=2)[:, 0] < 0.5
    assert good.sum() > 50, "too few left-right matches to judge the rectification"
    return float(np.median(np.abs(matched[good, 0, 1] - corners[good, 0, 1])))


def test_rectification_aligns_rows(euroc: Path, rectifier: EurocStereoRectifier) -> None:
    name = sorted((euroc / "mav0/cam0/data").glob("*.png"))[10].name
    left = cv2.imread(str(euroc / "mav0/cam0/data" / name), cv2.IMREAD_GRAYSCALE)
    right = cv2.imread(str(euroc / "mav0/cam1/data" / name), cv2.IMREAD_GRAYSCALE)
    before = _median_row_offset(left, right)
    after = _median_row_offset(*rectifier.rectify(left, right))
    assert after < 1.0
    assert before > 3.0 * max(after, 0.5)


def test_all_frames_are_paired_in_stamp_order(euroc: Path) -> None:
    reader = EurocStereoReader(euroc)
    stamps = []
    for frame in reader:
        assert frame.left.shape == (480, 752, 3) and frame.left.dtype == np.uint8
        assert frame.camera is reader.camera
        stamps.append(frame.stamp_ns)
    assert len(stamps) == 95
    assert all(b > a for a, b in itertools.pairwise(stamps))
    # About 20 Hz.
    assert np.median(np.diff(stamps)) == pytest.approx(50e6, rel=0.01)
    # cam1's list has 4 stamps cam0 lacks (and no images for them): counted, not yielded.
    assert reader.report.frames == 95
    assert reader.report.skipped["right image without a left image of the same stamp"] == 4
    assert len(list(read_euroc_stereo(euroc, limit=3))) == 3


def _small_copy(euroc: Path, target: Path, frames: int) -> Path:
    """A few real frames and the real sensor files in a new EuRoC layout (tmp only)."""
    for camera in ("cam0", "cam1"):
        folder = target / "mav0" / camera
        (folder / "data").mkdir(parents=True)
        shutil.copy(euroc / "mav0" / camera / "sensor.yaml", folder / "sensor.yaml")
        lines = (euroc / "mav0" / camera / "data.csv").read_text().splitlines()[: frames + 1]
        (folder / "data.csv").write_text("\n".join(lines) + "\n")
        for line in lines[1:]:
            name = line.split(",")[1]
            shutil.copy(euroc / "mav0" / camera / "data" / name, folder / "data" / name)
    return target


def test_unmatched_and_missing_images_are_skipped_and_counted(euroc: Path, tmp_path: Path) -> None:
    root = _small_copy(euroc, tmp_path / "seq", 4)
    csv = root / "mav0/cam0/data.csv"
    lines = csv.read_text().splitlines()
    first_stamp = lines[1].split(",")[0]
    csv.write_text("\n".join([*lines, "1403715299999999999,1403715299999999999.png"]) + "\n")
    (root / "mav0/cam1/data" / f"{first_stamp}.png").unlink()
    reader = EurocStereoReader(root)
    frames = list(reader)
    assert len(frames) == 3
    assert reader.report.skipped["left image without a right image of the same stamp"] == 1
    assert reader.report.skipped["image file missing or unreadable"] == 1
    assert frames[0].sequence == "seq"


def test_corrupt_sensor_file_names_the_file(euroc: Path, tmp_path: Path) -> None:
    root = _small_copy(euroc, tmp_path / "seq", 1)
    sensor = root / "mav0/cam1/sensor.yaml"
    sensor.write_text("%YAML:1.0\nT_BS: [unclosed\n")
    with pytest.raises(EurocError, match=str(sensor)):
        EurocStereoReader(root)
    sensor.write_text("%YAML:1.0\nsensor_type: camera\nresolution: [752, 480]\n")
    with pytest.raises(EurocError, match="missing T_BS"):
        read_euroc_sensor(sensor)
    text = (euroc / "mav0/cam1/sensor.yaml").read_text().replace("457.587, ", "")
    sensor.write_text(text)
    with pytest.raises(EurocError, match="intrinsics must be a list of 4"):
        read_euroc_sensor(sensor)
    with pytest.raises(EurocError, match="no EuRoC layout"):
        EurocStereoReader(tmp_path / "nothing")
