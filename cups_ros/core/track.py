"""A tracked instance as the tracker keeps it and the nodes publish it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class TrackState(enum.Enum):
    """Life cycle of a track: born tentative, confirmed after enough hits, lost when unmatched."""

    TENTATIVE = "tentative"
    CONFIRMED = "confirmed"
    LOST = "lost"
    REMOVED = "removed"


@dataclass
class Track:
    """A persistent instance; box is (x_min, y_min, x_max, y_max) in pixels of the last match."""

    track_id: int
    class_id: int
    box: tuple[float, float, float, float]
    score: float
    state: TrackState = TrackState.TENTATIVE
    hits: int = 1
    age: int = 1
    frames_since_update: int = 0
    last_stamp_ns: int = 0
    mask: np.ndarray | None = field(default=None, repr=False)
    embedding: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.track_id <= 0:
            raise ValueError(f"track ids start at 1 (0 means no instance), got {self.track_id}")
        x_min, y_min, x_max, y_max = self.box
        if not (x_min <= x_max and y_min <= y_max):
            raise ValueError(f"box must be (x_min, y_min, x_max, y_max), got {self.box}")

    @property
    def is_active(self) -> bool:
        return self.state in (TrackState.TENTATIVE, TrackState.CONFIRMED)
