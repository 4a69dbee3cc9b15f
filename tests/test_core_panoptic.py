"""The Cityscapes panoptic id codec of DESIGN.md, worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from cups_ros.core import (
    IGNORE_CLASS,
    PanopticMap,
    decode_panoptic_id,
    encode_panoptic_id,
    panoptic_from_rgb,
    panoptic_to_rgb,
)


def test_codec_matches_cityscapes_convention():
    assert int(encode_panoptic_id(13, 7)) == 13007  # car, instance 7
    assert int(encode_panoptic_id(0, 0)) == 0  # road (stuff)
    classes, instances = decode_panoptic_id(np.array([13007, 0, 255000]))
    assert classes.tolist() == [13, 0, IGNORE_CLASS]
    assert instances.tolist() == [7, 0, 0]


@pytest.mark.parametrize(("class_id", "instance_id"), [(256, 0), (-1, 0), (1, 1000), (1, -1)])
def test_codec_rejects_what_it_cannot_represent(class_id, instance_id):
    with pytest.raises(ValueError, match="ids must lie"):
        encode_panoptic_id(class_id, instance_id)


def test_segments_and_void():
    semantic = np.array([[0, 0, 13], [13, 255, 11]], dtype=np.int32)
    instance = np.array([[0, 0, 1], [2, 0, 1]], dtype=np.int32)
    panoptic = PanopticMap.from_semantic_instance(semantic, instance)
    assert [(s.panoptic_id, s.area, s.is_instance) for s in panoptic.segments()] == [
        (0, 2, False),
        (11001, 1, True),
        (13001, 1, True),
        (13002, 1, True),
    ]
    assert panoptic.void_mask.tolist() == [[False, False, False], [False, True, False]]
    np.testing.assert_array_equal(panoptic.semantic, semantic)


def test_rgb_encoding_is_lossless_for_all_codec_ids():
    ids = np.arange(0, 256000, 7, dtype=np.int32).reshape(1, -1)
    rgb = panoptic_to_rgb(ids)
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(panoptic_from_rgb(rgb), ids)
    assert panoptic_to_rgb(np.array([[26 + 256 * 3]]))[0, 0].tolist() == [26, 3, 0]
