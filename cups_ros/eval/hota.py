"""Tracking scores: HOTA (DetA, AssA, LocA), CLEAR (MOTA, MOTP, IDSW) and IDF1 through ``trackeval``.

We only build trackeval's per-sequence data (track ids per frame and a ground-truth x tracker
similarity per frame, ids relabelled contiguous) and let trackeval.metrics compute every score; no
score is reimplemented here. For panoptic maps the similarity is the mask IoU of thing segments
(instance > 0; the instance id is the track id), and, as trackeval's KITTI-MOTS preprocessing does
with its ignore regions, an unmatched predicted segment more than half inside ground-truth void or
crowd is removed before scoring. For boxes (MOTChallenge) the similarity is trackeval's own box IoU.

trackeval is imported on first use: it is slow to import and only needed for these scores.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR

MATCH_SIMILARITY = 0.5
IGNORED_FRACTION = 0.5
_FLOAT_EPS = float(np.finfo("float").eps)


@dataclass(frozen=True)
class TrackingFrame:
    """One frame: ground-truth and tracker track ids (unique within the frame) and their similarity."""

    gt_ids: np.ndarray
    tracker_ids: np.ndarray
    similarity: np.ndarray

    def __post_init__(self) -> None:
        expected = (len(self.gt_ids), len(self.tracker_ids))
        if np.shape(self.similarity) != expected:
            raise ValueError(f"similarity must be {expected} (gt x tracker), got {np.shape(self.similarity)}")
        for name, ids in (("ground-truth", self.gt_ids), ("tracker", self.tracker_ids)):
            if len(np.unique(ids)) != len(ids):
                raise ValueError(f"{name} ids repeat within a frame: {sorted(np.asarray(ids).tolist())}")


@dataclass(frozen=True)
class TrackingScores:
    """trackeval's scores for a sequence set (HOTA family: mean over its 19 alpha thresholds)."""

    hota: float
    deta: float
    assa: float
    loca: float
    detre: float
    detpr: float
    assre: float
    asspr: float
    mota: float
    motp: float
    idsw: int
    clear_tp: int
    clear_fn: int
    clear_fp: int
    idf1: float
    idp: float
    idr: float

    @classmethod
    def from_trackeval(
        cls, hota: Mapping[str, Any], clear: Mapping[str, Any], identity: Mapping[str, Any]
    ) -> TrackingScores:
        def mean(name: str) -> float:
            return float(np.mean(hota[name]))

        return cls(
            hota=mean("HOTA"),
            deta=mean("DetA"),
            assa=mean("AssA"),
            loca=mean("LocA"),
            detre=mean("DetRe"),
            detpr=mean("DetPr"),
            assre=mean("AssRe"),
            asspr=mean("AssPr"),
            mota=float(clear["MOTA"]),
            motp=float(clear["MOTP"]),
            idsw=int(clear["IDSW"]),
            clear_tp=int(clear["CLR_TP"]),
            clear_fn=int(clear["CLR_FN"]),
            clear_fp=int(clear["CLR_FP"]),
            idf1=float(identity["IDF1"]),
            idp=float(identity["IDP"]),
            idr=float(identity["IDR"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            name: (None if isinstance(v, float) and math.isnan(v) else v) for name, v in vars(self).items()
        }


@dataclass(frozen=True)
class TrackingEvaluation:
    """Scores over all sequences, per sequence, and trackeval's raw metric dicts over all sequences."""

    combined: TrackingScores
    per_sequence: dict[Hashable, TrackingScores]
    raw: dict[str, dict[str, Any]] = field(repr=False)


def _metrics() -> dict[str, Any]:
    try:
        from trackeval.metrics import CLEAR, HOTA, Identity
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("tracking scores need trackeval (pip install trackeval==1.3.0)") from error
    config = {"THRESHOLD": MATCH_SIMILARITY, "PRINT_CONFIG": False}
    return {"HOTA": HOTA(), "CLEAR": CLEAR(dict(config)), "Identity": Identity(dict(config))}


def _unique_ids(per_frame: Sequence[np.ndarray]) -> np.ndarray:
    arrays = [np.asarray(ids, dtype=np.int64).ravel() for ids in per_frame]
    return np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, dtype=np.int64)


def trackeval_sequence_data(frames: Sequence[TrackingFrame], name: str = "sequence") -> dict[str, Any]:
    """trackeval's preprocessed per-sequence data dict, ids relabelled to 0..n-1 as its datasets do."""
    all_gt = _unique_ids([f.gt_ids for f in frames])
    all_tracker = _unique_ids([f.tracker_ids for f in frames])
    return {
        "num_timesteps": len(frames),
        "num_gt_ids": int(all_gt.size),
        "num_tracker_ids": int(all_tracker.size),
        "num_gt_dets": int(sum(len(f.gt_ids) for f in frames)),
        "num_tracker_dets": int(sum(len(f.tracker_ids) for f in frames)),
        "gt_ids": [np.searchsorted(all_gt, np.asarray(f.gt_ids, dtype=np.int64)) for f in frames],
        "tracker_ids": [
            np.searchsorted(all_tracker, np.asarray(f.tracker_ids, dtype=np.int64)) for f in frames
        ],
        "similarity_scores": [np.asarray(f.similarity, dtype=np.float64) for f in frames],
        "seq": str(name),
    }


def evaluate_tracking(sequences: Mapping[Hashable, Sequence[TrackingFrame]]) -> TrackingEvaluation:
    """HOTA, CLEAR and Identity metrics of trackeval, per sequence and combined over sequences."""
    if not sequences:
        raise ValueError("no sequences to evaluate")
    metrics = _metrics()
    per_sequence_raw: dict[Hashable, dict[str, Any]] = {}
    for sequence_id, frames in sequences.items():
        data = trackeval_sequence_data(frames, str(sequence_id))
        per_sequence_raw[sequence_id] = {name: m.eval_sequence(data) for name, m in metrics.items()}
    combined_raw = {
        name: m.combine_sequences({str(s): res[name] for s, res in per_sequence_raw.items()})
        for name, m in metrics.items()
    }
    return TrackingEvaluation(
        combined=TrackingScores.from_trackeval(
            combined_raw["HOTA"], combined_raw["CLEAR"], combined_raw["Identity"]
        ),
        per_sequence={
            s: TrackingScores.from_trackeval(r["HOTA"], r["CLEAR"], r["Identity"])
            for s, r in per_sequence_raw.items()
        },
        raw=combined_raw,
    )


def box_iou_xywh(gt_boxes: np.ndarray, tracker_boxes: np.ndarray) -> np.ndarray:
    """(n_gt, n_tracker) IoU of (x, y, w, h) boxes, by trackeval's own MOTChallenge box IoU."""
    from trackeval.datasets._base_dataset import _BaseDataset

    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    tracker = np.asarray(tracker_boxes, dtype=np.float64).reshape(-1, 4)
    return _BaseDataset._calculate_box_ious(gt, tracker, box_format="xywh")


@dataclass(frozen=True)
class _MaskFrame:
    """Thing segments of one frame: ids, classes, pairwise mask IoU, predicted share on ignore regions."""

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    iou: np.ndarray
    pred_ignored_fraction: np.ndarray


def _mask_frame(gt_ids: np.ndarray, pred_ids: np.ndarray, thing_classes: np.ndarray) -> _MaskFrame:
    gt = np.asarray(gt_ids).astype(np.int64).ravel()
    pred = np.asarray(pred_ids).astype(np.int64).ravel()
    gt_classes, gt_instances = gt // LABEL_DIVISOR, gt % LABEL_DIVISOR
    pred_classes, pred_instances = pred // LABEL_DIVISOR, pred % LABEL_DIVISOR
    gt_thing = np.isin(gt_classes, thing_classes)
    gt_segment = gt_thing & (gt_instances > 0)
    pred_segment = np.isin(pred_classes, thing_classes) & (pred_instances > 0)
    ignore_region = (gt_classes == IGNORE_CLASS) | (gt_thing & (gt_instances == 0))

    gt_segments, gt_areas = np.unique(gt[gt_segment], return_counts=True)
    pred_segments, pred_areas = np.unique(pred[pred_segment], return_counts=True)
    both = gt_segment & pred_segment
    offset = int(pred.max()) + 1 if pred.size else 1
    pair_keys, intersections = np.unique(gt[both] * offset + pred[both], return_counts=True)
    rows = np.searchsorted(gt_segments, pair_keys // offset)
    columns = np.searchsorted(pred_segments, pair_keys % offset)
    iou = np.zeros((gt_segments.size, pred_segments.size), dtype=np.float64)
    iou[rows, columns] = intersections / (gt_areas[rows] + pred_areas[columns] - intersections)

    ignored_ids, ignored_counts = np.unique(pred[pred_segment & ignore_region], return_counts=True)
    ignored = np.zeros(pred_segments.size, dtype=np.int64)
    ignored[np.searchsorted(pred_segments, ignored_ids)] = ignored_counts
    return _MaskFrame(gt_segments, pred_segments, iou, ignored / np.maximum(pred_areas, 1))


def _without_ignored_predictions(
    frame: _MaskFrame, gt_rows: np.ndarray, pred_columns: np.ndarray
) -> TrackingFrame:
    """KITTI-MOTS preprocessing: drop unmatched predictions more than half inside ignore regions."""
    similarity = frame.iou[np.ix_(gt_rows, pred_columns)]
    unmatched = np.ones(pred_columns.size, dtype=bool)
    if gt_rows.size and pred_columns.size:
        scores = similarity.copy()
        scores[scores < MATCH_SIMILARITY - _FLOAT_EPS] = -10000
        match_rows, match_columns = linear_sum_assignment(-scores)
        unmatched[match_columns[scores[match_rows, match_columns] > _FLOAT_EPS]] = False
    removed = unmatched & (frame.pred_ignored_fraction[pred_columns] > IGNORED_FRACTION + _FLOAT_EPS)
    kept = pred_columns[~removed]
    return TrackingFrame(frame.gt_ids[gt_rows], frame.pred_ids[kept], similarity[:, ~removed])


@dataclass(frozen=True)
class TrackingResult:
    """Per evaluated class (or "all" when class-agnostic), and combined over classes as trackeval does:
    class-averaged (mean of the per-class scores) and detection-averaged (counts pooled)."""

    per_class: dict[int | str, TrackingScores]
    class_averaged: TrackingScores | None
    detection_averaged: TrackingScores | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_class": {str(c): s.to_dict() for c, s in self.per_class.items()},
            "class_averaged": None if self.class_averaged is None else self.class_averaged.to_dict(),
            "detection_averaged": None
            if self.detection_averaged is None
            else self.detection_averaged.to_dict(),
        }


class MaskTrackingAccumulator:
    """Collects mask IoUs of thing segments frame by frame; ``compute`` runs trackeval per class.

    ``class_aware``: each thing class is evaluated on its own (trackeval's per-class evaluation);
    otherwise all thing segments form one class "all" and a track may match across classes.
    Track ids are the panoptic ids (class * 1000 + instance).
    """

    def __init__(
        self,
        thing_classes: Iterable[int],
        class_aware: bool = True,
        remove_ignored_predictions: bool = True,
    ) -> None:
        self.thing_classes = np.array(sorted({int(c) for c in thing_classes}), dtype=np.int64)
        self.class_aware = class_aware
        self.remove_ignored_predictions = remove_ignored_predictions
        self._sequences: dict[Hashable, list[_MaskFrame]] = {}

    def update(self, gt_ids: np.ndarray, pred_ids: np.ndarray, sequence_id: Hashable = 0) -> None:
        """Adds the next frame of ``sequence_id`` (panoptic maps in our codec, track ids as instances)."""
        if np.shape(gt_ids) != np.shape(pred_ids):
            raise ValueError(f"ground truth {np.shape(gt_ids)} and prediction {np.shape(pred_ids)} differ")
        self._sequences.setdefault(sequence_id, []).append(_mask_frame(gt_ids, pred_ids, self.thing_classes))

    def _group_frames(self, frame: _MaskFrame, class_id: int | None) -> TrackingFrame:
        if class_id is None:
            gt_rows, pred_columns = np.arange(frame.gt_ids.size), np.arange(frame.pred_ids.size)
        else:
            gt_rows = np.flatnonzero(frame.gt_ids // LABEL_DIVISOR == class_id)
            pred_columns = np.flatnonzero(frame.pred_ids // LABEL_DIVISOR == class_id)
        if self.remove_ignored_predictions:
            return _without_ignored_predictions(frame, gt_rows, pred_columns)
        return TrackingFrame(
            frame.gt_ids[gt_rows], frame.pred_ids[pred_columns], frame.iou[np.ix_(gt_rows, pred_columns)]
        )

    def compute(self) -> TrackingResult:
        """Scores per class that appears in ground truth or prediction, and combined over them."""
        if self.class_aware:
            seen: set[int] = set()
            for frames in self._sequences.values():
                for frame in frames:
                    seen.update((frame.gt_ids // LABEL_DIVISOR).tolist())
                    seen.update((frame.pred_ids // LABEL_DIVISOR).tolist())
            groups: list[tuple[int | str, int | None]] = [(c, c) for c in sorted(seen)]
        else:
            groups = [("all", None)]

        metrics = _metrics()
        per_class_raw: dict[int | str, dict[str, Any]] = {}
        per_class: dict[int | str, TrackingScores] = {}
        for name, class_id in groups:
            sequences = {
                s: [self._group_frames(frame, class_id) for frame in frames]
                for s, frames in self._sequences.items()
            }
            evaluation = evaluate_tracking(sequences)
            per_class_raw[name] = evaluation.raw
            per_class[name] = evaluation.combined
        if not per_class:
            return TrackingResult(per_class={}, class_averaged=None, detection_averaged=None)

        def combined(how: str) -> TrackingScores:
            raw = {}
            for metric_name, metric in metrics.items():
                results = {str(c): r[metric_name] for c, r in per_class_raw.items()}
                if how == "class":
                    raw[metric_name] = metric.combine_classes_class_averaged(results)
                else:
                    raw[metric_name] = metric.combine_classes_det_averaged(results)
            return TrackingScores.from_trackeval(raw["HOTA"], raw["CLEAR"], raw["Identity"])

        return TrackingResult(
            per_class=per_class, class_averaged=combined("class"), detection_averaged=combined("detection")
        )
