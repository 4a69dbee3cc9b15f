"""Settings of the online tracker: association cost, gates and the track life cycle."""

from __future__ import annotations

from dataclasses import dataclass

from cups_ros.core.panoptic import MAX_INSTANCE_ID


@dataclass
class TrackerConfig:
    """Association (cost = weighted mean of 1 - IoU and 1 - cosine, plus a class term and, without
    embeddings, a centre-distance term) and life cycle.

    A detection-track pair is found by mask or embedding if its class passes, its cost (without the
    distance term) is at most ``max_cost`` and either its mask IoU reaches ``min_iou`` or (both have
    embeddings) its cosine similarity reaches ``min_embedding_similarity`` with the detection within
    ``embedding_centre_distance`` gate sizes of the track's predicted centre. With
    ``position_matching``, pairs within ``max_centre_distance`` gate sizes of the predicted centre are
    found by position too, except pairs whose embeddings disagree: the route by which small or fast
    objects, and lost tracks after an occlusion, are found again. One assignment takes the cheapest
    pairs found by mask or embedding and, for what those leave over, by position.
    """

    mask_stride: int = 4
    """Masks are kept and compared at 1/mask_stride resolution (per-frame cost, not accuracy)."""
    full_resolution_area: int = 1024
    """Pixels: detections smaller than this are compared with the tracks at full resolution, and a
    track keeps such a detection's mask at full resolution (at 1/mask_stride, objects a few pixels
    wide lose most of their mask or all of it, and neighbours become indistinguishable); 0: never."""
    iou_weight: float = 1.0
    embedding_weight: float = 1.0
    min_iou: float = 0.1
    min_embedding_similarity: float = 0.5
    max_centre_distance: float = 1.0
    """In gate sizes: the larger side of the track's or the detection's box, at least min_gate_size."""
    embedding_centre_distance: float = 3.0
    """The same for the embedding route: how far from its predicted centre a lost or partly hidden
    track may be found again by its embedding."""
    min_gate_size: float = 16.0
    """Pixels: the position gate of objects smaller than this."""
    position_matching: bool = True
    """Pairs within max_centre_distance of the predicted centre may match by position alone (for what
    the pairs found by mask or embedding leave over: small, fast or reappearing objects)."""
    position_weight: float = 0.5
    """Cost per gate size of predicted-centre distance of the pairs without embeddings to compare (at
    most max_centre_distance of it for pairs found by mask): between neighbours whose masks both
    overlap a little the nearer one wins, and among pairs found by position alone the nearest."""
    max_cost: float = 0.9
    gate_classes: bool = True
    """True: a detection of another class never continues a track; False: it costs class_mismatch_cost."""
    class_mismatch_cost: float = 0.3
    min_score: float = 0.2
    """Unmatched detections below this score start no track (they may still continue one)."""
    confirm_hits: int = 3
    confirm_window: int = 5
    """A tentative track needs confirm_hits matches within its first confirm_window frames."""
    max_age: int = 15
    """Frames a confirmed track survives unmatched (LOST) before it is REMOVED."""
    embedding_momentum: float = 0.8
    """Track embedding = momentum x old + (1 - momentum) x matched detection's, renormalised."""
    velocity_smoothing: float = 0.5
    """Weight of the newest displacement (box centre, or the flow's where occluders cut the box) in
    the constant-velocity estimate."""
    publish_tentative: bool = True
    """Tentative tracks appear in the output with their id; False: their pixels are void."""
    max_track_id: int = MAX_INSTANCE_ID
    """Largest track id (the panoptic codec holds 1..999); beyond it, ids of removed tracks are reused."""

    def __post_init__(self) -> None:
        def check(condition: bool, message: str) -> None:
            if not condition:
                raise ValueError(f"tracker.{message}")

        check(self.mask_stride >= 1, f"mask_stride must be >= 1, got {self.mask_stride}")
        check(
            self.full_resolution_area >= 0,
            f"full_resolution_area must be >= 0, got {self.full_resolution_area}",
        )
        check(self.iou_weight >= 0.0, f"iou_weight must be >= 0, got {self.iou_weight}")
        check(self.embedding_weight >= 0.0, f"embedding_weight must be >= 0, got {self.embedding_weight}")
        check(
            self.iou_weight + self.embedding_weight > 0.0,
            "iou_weight and embedding_weight must not both be 0",
        )
        check(0.0 <= self.min_iou <= 1.0, f"min_iou must lie in [0, 1], got {self.min_iou}")
        check(
            -1.0 <= self.min_embedding_similarity <= 1.0,
            f"min_embedding_similarity must lie in [-1, 1], got {self.min_embedding_similarity}",
        )
        check(
            self.max_centre_distance >= 0.0,
            f"max_centre_distance must be >= 0, got {self.max_centre_distance}",
        )
        check(
            self.embedding_centre_distance >= 0.0,
            f"embedding_centre_distance must be >= 0, got {self.embedding_centre_distance}",
        )
        check(self.min_gate_size >= 0.0, f"min_gate_size must be >= 0, got {self.min_gate_size}")
        check(self.position_weight > 0.0, f"position_weight must be > 0, got {self.position_weight}")
        check(self.max_cost > 0.0, f"max_cost must be > 0, got {self.max_cost}")
        check(
            self.class_mismatch_cost >= 0.0,
            f"class_mismatch_cost must be >= 0, got {self.class_mismatch_cost}",
        )
        check(self.confirm_hits >= 1, f"confirm_hits must be >= 1, got {self.confirm_hits}")
        check(
            self.confirm_window >= self.confirm_hits,
            f"confirm_window ({self.confirm_window}) must be >= confirm_hits ({self.confirm_hits})",
        )
        check(self.max_age >= 0, f"max_age must be >= 0, got {self.max_age}")
        check(
            0.0 <= self.embedding_momentum < 1.0,
            f"embedding_momentum must lie in [0, 1), got {self.embedding_momentum}",
        )
        check(
            0.0 < self.velocity_smoothing <= 1.0,
            f"velocity_smoothing must lie in (0, 1], got {self.velocity_smoothing}",
        )
        check(
            1 <= self.max_track_id <= MAX_INSTANCE_ID,
            f"max_track_id must lie in [1, {MAX_INSTANCE_ID}], got {self.max_track_id}",
        )
