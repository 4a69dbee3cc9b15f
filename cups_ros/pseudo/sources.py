"""Input sequences for pseudo-labelling: simulator folders and ROS 2 bags, as StereoFrame streams.

Pseudo-labelling needs each frame with a neighbour (t+1, or t-1 for the last frame), a frame count
for sharding and progress, and nothing else; both sources stream, so long drives fit in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cups_ros.core.frame import StereoFrame


@dataclass
class InputSequence:
    """One stereo video: a simulator sequence folder or a bag."""

    name: str
    path: Path
    kind: str  # "sim" or "bag"
    length: int

    def frames(self) -> Iterator[StereoFrame]:
        if self.kind == "sim":
            from cups_ros.sim.dataset import SimSequence

            sequence = SimSequence(self.path)
            for frame in sequence:
                yield frame.stereo_frame(self.name)
        else:
            from cups_ros.io.bag import StereoBagReader

            yield from StereoBagReader(self.path)

    def frame_pairs(self, wanted: set[int]) -> Iterator[tuple[int, StereoFrame, StereoFrame]]:
        """(index, frame, neighbour) for the wanted indices, in order; the neighbour is t+1, or
        t-1 for the last frame (its motion is read backwards)."""
        if not wanted:
            return
        last_wanted = max(wanted)
        before: StereoFrame | None = None  # frame index - 1
        pending: tuple[int, StereoFrame, StereoFrame | None] | None = None
        for index, frame in enumerate(self.frames()):
            if pending is not None:
                yield pending[0], pending[1], frame
                pending = None
            if index in wanted:
                pending = (index, frame, before)
            if pending is None and index >= last_wanted:
                return
            before = frame
        if pending is not None:  # the last frame of the stream
            if pending[2] is None:
                raise ValueError(f"{self.path}: one frame only, pseudo-labels need two or more")
            yield pending[0], pending[1], pending[2]


def _sim_sequence(path: Path) -> InputSequence:
    from cups_ros.sim.dataset import SimSequence

    sequence = SimSequence(path)
    return InputSequence(sequence.name, path, "sim", len(sequence))


def _bag_sequence(path: Path) -> InputSequence:
    from cups_ros.io.bag import StereoBagReader

    reader = StereoBagReader(path)
    count = sum(1 for _ in reader)
    name = path.stem if path.suffix in (".bag", ".mcap", ".db3") else path.name
    return InputSequence(name, path, "bag", count)


def open_sequences(inputs: list[Path], split: str | None = None) -> list[InputSequence]:
    """Each input is a bag (file or folder with metadata.yaml), a simulator sequence folder, or a
    folder of simulator sequences (``split`` keeps ``<split>_*`` only)."""
    sequences: list[InputSequence] = []
    for path in inputs:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"input {path} does not exist")
        if (path / "sequence.json").exists():
            sequences.append(_sim_sequence(path))
        elif path.is_file() or (path / "metadata.yaml").exists():
            sequences.append(_bag_sequence(path))
        else:
            pattern = f"{split}_*" if split else "*"
            folders = sorted(p for p in path.glob(pattern) if (p / "sequence.json").exists())
            bags = sorted(p for p in path.glob(f"{pattern}.bag") if p.suffix == ".bag")
            if not folders and not bags:
                raise ValueError(f"{path}: no simulator sequences ({pattern}/sequence.json) or bags found")
            sequences += [_sim_sequence(p) for p in folders] or [_bag_sequence(p) for p in bags]
    names = [s.name for s in sequences]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two inputs share the sequence name(s) {duplicates}")
    for sequence in sequences:
        if sequence.length < 2:
            raise ValueError(f"{sequence.path}: {sequence.length} frame(s), pseudo-labels need two or more")
    return sequences
