"""Hungarian matching of K predicted pseudo-classes to G ground-truth classes over a whole split.

Unsupervised semantics have arbitrary class numbers, so evaluation first assigns each pseudo-class a
ground-truth class: one-to-one by maximum total pixel overlap (scipy's linear_sum_assignment on the
split-wide confusion matrix), optionally thing to thing and stuff to stuff; pseudo-classes left over
when K > G go to the class they overlap most, or to void.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR, MAX_INSTANCE_ID
from cups_ros.eval.semantic import ConfusionMatrix

LeftoverPolicy = Literal["majority", "void"]


@dataclass(frozen=True)
class ClassMapping:
    """``target[k]``: the ground-truth class of pseudo-class k (IGNORE_CLASS for void).

    ``hungarian[k]`` tells whether k was assigned one-to-one (else it was a leftover).
    ``gt_thing_classes``, when known, lets panoptic remapping drop instance ids of pseudo-classes that
    land on a stuff class (a stuff class has one segment per image).
    """

    target: np.ndarray
    hungarian: np.ndarray
    gt_thing_classes: frozenset[int] | None = None

    @property
    def num_pseudo_classes(self) -> int:
        return int(self.target.size)

    def lookup_table(self) -> np.ndarray:
        """(IGNORE_CLASS + 1,) table: pseudo-class -> class, void stays void, -1 for unknown ids."""
        table = np.full(IGNORE_CLASS + 1, -1, dtype=np.int64)
        table[: self.num_pseudo_classes] = self.target
        table[IGNORE_CLASS] = IGNORE_CLASS
        return table

    def remap_semantic(self, pseudo_classes: np.ndarray) -> np.ndarray:
        """Class map of pseudo-classes -> class map of ground-truth classes (int32)."""
        classes = np.asarray(pseudo_classes).astype(np.int64)
        if classes.size and (classes.min() < 0 or classes.max() > IGNORE_CLASS):
            raise ValueError(f"pseudo-classes must lie in [0, {IGNORE_CLASS}]")
        remapped = self.lookup_table()[classes]
        if (remapped < 0).any():
            raise ValueError(f"pseudo-classes beyond the {self.num_pseudo_classes} matched ones")
        return remapped.astype(np.int32)

    def remap_panoptic(self, pseudo_panoptic_ids: np.ndarray) -> np.ndarray:
        """One panoptic map of pseudo-classes -> ground-truth classes (see PanopticRemapper)."""
        return PanopticRemapper(self)(pseudo_panoptic_ids)

    def panoptic_remapper(self) -> PanopticRemapper:
        """A remapper that keeps renumbered instance ids consistent over a sequence's frames."""
        return PanopticRemapper(self)


class PanopticRemapper:
    """Remaps the class part of panoptic ids and keeps instance ids, unique per class.

    Instance ids stay as they are unless several pseudo-classes map to one class: then their instances
    could collide, so that class's instances are renumbered 1, 2, ... in order of first appearance
    (ascending source id within a frame), consistently over every frame given to this remapper, so
    track ids stay tracks.
    """

    def __init__(self, mapping: ClassMapping) -> None:
        self.mapping = mapping
        self._table = mapping.lookup_table()
        targets, sources = np.unique(mapping.target, return_counts=True)
        self._shared_targets = frozenset(int(t) for t, n in zip(targets, sources, strict=True) if n > 1)
        self._renumbered: dict[int, int] = {}
        self._next_instance: dict[int, int] = {}

    def _remap_id(self, source_id: int) -> int:
        pseudo_class, instance = divmod(source_id, LABEL_DIVISOR)
        target = int(self._table[pseudo_class])
        if target < 0:
            raise ValueError(
                f"pseudo-class {pseudo_class} beyond the {self.mapping.num_pseudo_classes} matched"
            )
        if target == IGNORE_CLASS:
            return IGNORE_CLASS * LABEL_DIVISOR
        stuff_target = (
            self.mapping.gt_thing_classes is not None and target not in self.mapping.gt_thing_classes
        )
        if instance == 0 or stuff_target:
            return target * LABEL_DIVISOR
        if target not in self._shared_targets:
            return target * LABEL_DIVISOR + instance
        if source_id not in self._renumbered:
            new_instance = self._next_instance.get(target, 1)
            if new_instance > MAX_INSTANCE_ID:
                raise ValueError(f"more than {MAX_INSTANCE_ID} instances of class {target} after remapping")
            self._next_instance[target] = new_instance + 1
            self._renumbered[source_id] = target * LABEL_DIVISOR + new_instance
        return self._renumbered[source_id]

    def __call__(self, pseudo_panoptic_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(pseudo_panoptic_ids)
        if ids.size and (ids.min() < 0 or ids.max() >= (IGNORE_CLASS + 1) * LABEL_DIVISOR):
            raise ValueError("panoptic ids outside the codec's range")
        segments, inverse = np.unique(ids, return_inverse=True)
        # A Python loop over segments (tens per frame), never over pixels.
        remapped = np.array([self._remap_id(int(s)) for s in segments.tolist()], dtype=np.int32)
        return remapped[inverse].reshape(ids.shape)


def match_pseudo_classes(
    overlap: np.ndarray | ConfusionMatrix,
    *,
    pseudo_thing_classes: Iterable[int] | None = None,
    gt_thing_classes: Iterable[int] | None = None,
    leftover: LeftoverPolicy = "majority",
) -> ClassMapping:
    """Assigns pseudo-classes to ground-truth classes maximising total overlap.

    ``overlap`` is (K, G) pixel counts (pseudo-class x ground-truth class), or a ConfusionMatrix with
    pseudo-classes as its predicted classes. With both thing sets given, thing pseudo-classes are
    matched to thing classes only and stuff to stuff, leftovers included. ``leftover``: "majority"
    sends each unmatched pseudo-class to its most-overlapping allowed class (void when it overlaps
    none), "void" sends them all to void.
    """
    counts = overlap.overlap if isinstance(overlap, ConfusionMatrix) else np.asarray(overlap)
    if counts.ndim != 2:
        raise ValueError(f"overlap must be a (K, G) matrix, got shape {counts.shape}")
    if leftover not in ("majority", "void"):
        raise ValueError(f"leftover must be 'majority' or 'void', got {leftover!r}")
    num_pseudo, num_gt = counts.shape
    if num_gt > IGNORE_CLASS:
        raise ValueError(f"at most {IGNORE_CLASS} ground-truth classes")
    if pseudo_thing_classes is not None and gt_thing_classes is None:
        raise ValueError("thing-to-thing matching needs the ground-truth thing classes too")
    gt_things = None if gt_thing_classes is None else frozenset(int(c) for c in gt_thing_classes)

    # (pseudo-classes, ground-truth classes) allowed to match each other.
    groups = [(np.ones(num_pseudo, dtype=bool), np.ones(num_gt, dtype=bool))]
    if pseudo_thing_classes is not None and gt_things is not None:
        pseudo_is_thing = np.isin(np.arange(num_pseudo), list(pseudo_thing_classes))
        gt_is_thing = np.isin(np.arange(num_gt), list(gt_things))
        groups = [(pseudo_is_thing, gt_is_thing), (~pseudo_is_thing, ~gt_is_thing)]

    target = np.full(num_pseudo, IGNORE_CLASS, dtype=np.int32)
    hungarian = np.zeros(num_pseudo, dtype=bool)
    for pseudo_mask, gt_mask in groups:
        rows, columns = np.flatnonzero(pseudo_mask), np.flatnonzero(gt_mask)
        if rows.size and columns.size:
            assigned_rows, assigned_columns = linear_sum_assignment(
                counts[np.ix_(rows, columns)], maximize=True
            )
            target[rows[assigned_rows]] = columns[assigned_columns]
            hungarian[rows[assigned_rows]] = True
        if leftover == "majority" and columns.size:
            for row in rows[~hungarian[rows]]:
                allowed = counts[row, columns]
                if allowed.max() > 0:
                    target[row] = columns[int(np.argmax(allowed))]
    return ClassMapping(target=target, hungarian=hungarian, gt_thing_classes=gt_things)
