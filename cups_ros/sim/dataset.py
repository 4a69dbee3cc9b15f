"""Dataset folders of generated sequences, written atomically and resumably, and their loader.

Layout of one sequence folder::

    sequence.json            camera, seed, town, frame count, fps, instances (class per track id)
    left/000000.png          RGB, as the camera saw it (noise, exposure)
    right/000000.png
    semantic/000000.png      uint8 Cityscapes train ids (255 ignore)
    panoptic/000000.png      class * 1000 + track id in the panoptic_to_rgb encoding
    gt/000000.npz            depth (float32 m, inf sky), flow (HxWx2), flow_valid, stereo_valid
    poses/000000.json        camera pose (world from left camera), object poses, moving flags

A frame counts as finished once its pose JSON exists (written last), so an interrupted run resumes
at the first unfinished frame; ``sequence.json`` gets ``complete: true`` at the end.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cups_ros.core.camera import CameraModel
from cups_ros.core.files import write_bytes_atomic, write_json_atomic
from cups_ros.core.frame import StereoFrame
from cups_ros.core.panoptic import decode_panoptic_id, panoptic_from_rgb, panoptic_to_rgb
from cups_ros.sim.config import SimConfig
from cups_ros.sim.generate import GeneratedFrame, SequenceGenerator, sequence_seed

FORMAT_VERSION = 1


def _png(image: np.ndarray) -> bytes:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError("PNG encoding failed")
    return encoded.tobytes()


def _read_png(path: Path, colour: bool) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR if colour else cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileNotFoundError(f"cannot read {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if colour else image


def sequence_name(split: str, index: int) -> str:
    return f"{split}_{index:04d}"


def write_frame(folder: Path, frame: GeneratedFrame) -> None:
    """All files of one frame; the pose JSON last, as the 'finished' marker."""
    name = f"{frame.index:06d}"
    write_bytes_atomic(folder / "left" / f"{name}.png", _png(frame.left))
    write_bytes_atomic(folder / "right" / f"{name}.png", _png(frame.right))
    write_bytes_atomic(folder / "semantic" / f"{name}.png", _png(frame.semantic))
    write_bytes_atomic(folder / "panoptic" / f"{name}.png", _png(panoptic_to_rgb(frame.panoptic)))
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        depth=frame.depth,
        flow=frame.flow,
        flow_valid=frame.flow_valid,
        stereo_valid=frame.stereo_valid,
    )
    write_bytes_atomic(folder / "gt" / f"{name}.npz", buffer.getvalue())
    write_json_atomic(
        folder / "poses" / f"{name}.json",
        {
            "index": frame.index,
            "stamp_ns": frame.stamp_ns,
            "camera_pose": frame.camera_pose.tolist(),
            "objects": {
                str(track): {
                    "pose": pose.tolist(),
                    "moving": frame.moving[track],
                    "class_id": frame.classes[track],
                }
                for track, pose in frame.object_poses.items()
            },
        },
    )


def write_sequence(
    folder: str | Path,
    config: SimConfig,
    seed: int,
    town: str,
    frames: int,
    progress: object | None = None,
) -> Path:
    """Renders and writes one sequence, skipping frames already on disk; returns the folder."""
    folder = Path(folder)
    meta_path = folder / "sequence.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("complete"):
        if progress is not None:
            progress.update(frames)  # type: ignore[attr-defined]
        return folder
    done = 0
    while (folder / "poses" / f"{done:06d}.json").exists() and done < frames:
        done += 1
    if progress is not None and done:
        progress.update(done)  # type: ignore[attr-defined]
    generator = SequenceGenerator(config, seed, town, frames)
    meta = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "town": town,
        "frames": frames,
        "fps": config.rig.fps,
        "camera": {
            "fx": generator.camera.fx,
            "fy": generator.camera.fy,
            "cx": generator.camera.cx,
            "cy": generator.camera.cy,
            "baseline": generator.camera.baseline,
            "width": generator.camera.width,
            "height": generator.camera.height,
        },
        "instances": {
            str(o.track_id): {"class_id": o.class_id, "name": o.name}
            for o in generator.scene.objects
            if o.track_id > 0
        },
        "complete": False,
    }
    write_json_atomic(meta_path, meta)
    for frame in generator.frames_from(done):
        write_frame(folder, frame)
        if progress is not None:
            progress.update(1)  # type: ignore[attr-defined]
    meta["complete"] = True
    write_json_atomic(meta_path, meta)
    return folder


def write_split(
    root: str | Path,
    config: SimConfig,
    split: str,
    sequences: int | None = None,
    frames: int | None = None,
    town: str | None = None,
    show_progress: bool = True,
) -> list[Path]:
    """All sequences of a split under root/<split>_<index>; finished ones are skipped."""
    if split not in config.splits:
        raise ValueError(f"unknown split {split!r} (known: {', '.join(config.splits)})")
    plan = config.splits[split]
    count = plan.sequences if sequences is None else sequences
    length = plan.frames if frames is None else frames
    progress = None
    if show_progress:
        from tqdm import tqdm

        progress = tqdm(total=count * length, unit="frame", desc=f"sim {split}")
    folders = []
    try:
        for index in range(count):
            chosen_town = town or plan.towns[index % len(plan.towns)]
            folders.append(
                write_sequence(
                    Path(root) / sequence_name(split, index),
                    config,
                    sequence_seed(split, index),
                    chosen_town,
                    length,
                    progress,
                )
            )
    finally:
        if progress is not None:
            progress.close()
    return folders


@dataclass(frozen=True)
class SimFrame:
    """One loaded frame with all ground truth (see the module docstring for units)."""

    index: int
    stamp_ns: int
    left: np.ndarray
    right: np.ndarray
    depth: np.ndarray
    disparity: np.ndarray
    flow: np.ndarray
    flow_valid: np.ndarray
    stereo_valid: np.ndarray
    semantic: np.ndarray
    panoptic: np.ndarray
    camera: CameraModel
    camera_pose: np.ndarray
    object_poses: dict[int, np.ndarray]
    moving: dict[int, bool]

    @property
    def instance(self) -> np.ndarray:
        """Track id per pixel (0 for stuff)."""
        return decode_panoptic_id(self.panoptic)[1]

    def stereo_frame(self, sequence: str = "") -> StereoFrame:
        return StereoFrame(
            self.left, self.right, self.camera, self.stamp_ns, "sim_left", sequence, self.index
        )


class SimSequence:
    """Loader of one sequence folder: len(), indexing and iteration give SimFrame objects."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / "sequence.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{self.folder} is not a simulated sequence (no sequence.json)")
        self.meta = json.loads(meta_path.read_text())
        self.camera = CameraModel(**self.meta["camera"])
        self.instances = {int(k): v for k, v in self.meta["instances"].items()}
        self.frame_count = sum(1 for _ in (self.folder / "poses").glob("*.json"))

    @property
    def name(self) -> str:
        return self.folder.name

    def __len__(self) -> int:
        return self.frame_count

    def __iter__(self) -> Iterator[SimFrame]:
        return (self[index] for index in range(len(self)))

    def __getitem__(self, index: int) -> SimFrame:
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} outside 0..{len(self) - 1} of {self.folder}")
        name = f"{index:06d}"
        poses = json.loads((self.folder / "poses" / f"{name}.json").read_text())
        with np.load(self.folder / "gt" / f"{name}.npz") as gt:
            depth, flow = gt["depth"], gt["flow"]
            flow_valid, stereo_valid = gt["flow_valid"], gt["stereo_valid"]
        return SimFrame(
            index=index,
            stamp_ns=int(poses["stamp_ns"]),
            left=_read_png(self.folder / "left" / f"{name}.png", True),
            right=_read_png(self.folder / "right" / f"{name}.png", True),
            depth=depth,
            disparity=self.camera.depth_to_disparity(depth),
            flow=flow,
            flow_valid=flow_valid,
            stereo_valid=stereo_valid,
            semantic=_read_png(self.folder / "semantic" / f"{name}.png", False),
            panoptic=panoptic_from_rgb(_read_png(self.folder / "panoptic" / f"{name}.png", True)),
            camera=self.camera,
            camera_pose=np.asarray(poses["camera_pose"]),
            object_poses={int(k): np.asarray(v["pose"]) for k, v in poses["objects"].items()},
            moving={int(k): bool(v["moving"]) for k, v in poses["objects"].items()},
        )


def load_split(root: str | Path, split: str) -> list[SimSequence]:
    """All sequence folders of a split under root, in index order."""
    return [
        SimSequence(path)
        for path in sorted(Path(root).glob(f"{split}_*"))
        if (path / "sequence.json").exists()
    ]
