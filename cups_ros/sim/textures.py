"""Tileable grey detail textures from real photographs bundled with scikit-image, with mip pyramids.

Only images shipped inside the scikit-image wheel are used (brick, grass, gravel, moon): nothing is
downloaded at run time. Each texture is normalised to mean 1, mirrored into a seamless tile, and
sampled by world/object-space coordinates in metres, choosing the mip level from the pixel footprint so
that distant surfaces do not alias (which would make stereo and flow behave unlike real images).
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import skimage

# Mip level bias (levels finer than the pixel footprint): a real lens and sensor resolve detail up to
# about the pixel pitch, sharper than a box filter of a whole footprint.
MIP_BIAS = 0.75
_SKIMAGE_DATA = Path(skimage.__file__).resolve().parent / "data"


class Texture:
    """Mip pyramid of a seamless grey tile (mean about 1) spanning ``tile_metres`` on the surface,
    packed in one atlas (each level with a one-texel wrapped border) so one cv2.remap samples all
    pixels whatever their mip level."""

    def __init__(self, levels: tuple[np.ndarray, ...], tile_metres: float) -> None:
        self.levels = levels
        self.tile_metres = tile_metres
        size = levels[0].shape[0]
        height = size + 2
        width = size + 2 + (levels[1].shape[0] + 2 if len(levels) > 1 else 0)
        atlas = np.zeros((max(height, sum(level.shape[0] + 2 for level in levels[1:])), width), np.float32)
        offsets = [(1.0, 1.0)]
        atlas[:height, : size + 2] = np.pad(levels[0], 1, mode="wrap")
        y = 0
        for level in levels[1:]:
            n = level.shape[0]
            atlas[y : y + n + 2, size + 2 : size + 4 + n] = np.pad(level, 1, mode="wrap")
            offsets.append((size + 3.0, y + 1.0))
            y += n + 2
        self.atlas = atlas
        self.offset_x = np.array([o[0] for o in offsets], np.float32)
        self.offset_y = np.array([o[1] for o in offsets], np.float32)
        self.sizes = np.array([level.shape[0] for level in levels], np.float32)

    @property
    def size(self) -> int:
        return int(self.levels[0].shape[0])

    def sample(self, u: np.ndarray, v: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Values at surface coordinates u, v (metres); footprint = metres covered by one pixel."""
        if u.size == 0:
            return np.empty(u.shape, dtype=np.float32)
        texels_per_metre = np.float32(self.size / self.tile_metres)
        level = np.log2(np.maximum(footprint * texels_per_metre, 1e-6))
        level = np.clip(np.rint(level - MIP_BIAS), 0, len(self.levels) - 1).astype(np.intp)
        size = self.sizes[level]
        scale = texels_per_metre * size / np.float32(self.size)
        map_x = np.mod(u * scale, size) + self.offset_x[level]
        map_y = np.mod(v * scale, size) + self.offset_y[level]
        sampled = cv2.remap(
            self.atlas, _as_map(map_x), _as_map(map_y), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        return sampled.reshape(-1)[: u.size]


_MAP_WIDTH = 1024


def _as_map(values: np.ndarray) -> np.ndarray:
    """Flat coordinates as a 2-D float32 map (cv2.remap wants fewer than 32767 rows and columns)."""
    count = values.size
    rows = -(-count // _MAP_WIDTH)
    padded = np.zeros(rows * _MAP_WIDTH, dtype=np.float32)
    padded[:count] = values
    return padded.reshape(rows, _MAP_WIDTH)


def periodic_noise(size: int, beta: float, seed: int) -> np.ndarray:
    """Tileable 1/f^beta noise (Fourier-filtered white noise is periodic), zero mean, unit std."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal((size, size))
    frequencies = np.fft.fftfreq(size)
    radius = np.hypot(frequencies[:, None], frequencies[None, :])
    radius[0, 0] = 1.0
    spectrum = np.fft.fft2(white) / radius**beta
    spectrum[0, 0] = 0.0
    noise = np.real(np.fft.ifft2(spectrum))
    return ((noise - noise.mean()) / (noise.std() + 1e-9)).astype(np.float32)


def _mirror_tile(image: np.ndarray) -> np.ndarray:
    """Seamless tile: the photo and its mirror images side by side (continuous across every edge)."""
    top = np.hstack([image, image[:, ::-1]])
    return np.vstack([top, top[::-1]])


def _pyramid(tile: np.ndarray) -> tuple[np.ndarray, ...]:
    levels = [tile.astype(np.float32)]
    while levels[-1].shape[0] > 8:
        # A mirror tile wraps exactly like a reflected border, so the levels stay seamless.
        levels.append(cv2.pyrDown(levels[-1], borderType=cv2.BORDER_REFLECT))
    return tuple(levels)


def _photo(name: str) -> np.ndarray:
    path = _SKIMAGE_DATA / f"{name}.png"
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise FileNotFoundError(f"bundled scikit-image texture {path} is missing")
    return image.astype(np.float32)


def _normalised(image: np.ndarray, contrast: float) -> np.ndarray:
    """Mean 1, standard deviation ``contrast``: materials tint it and keep the photo's detail."""
    centred = (image - image.mean()) / (image.std() + 1e-6)
    return (1.0 + contrast * centred).clip(0.05, 3.0).astype(np.float32)


def _photo_texture(
    name: str, contrast: float, tile_metres: float, detail_seed: int, mottle: float
) -> Texture:
    tile = _mirror_tile(_normalised(_photo(name), contrast))
    # Low-frequency mottling (stains, wear) over the photo, so tiles do not repeat too visibly.
    tile = tile * (1.0 + mottle * periodic_noise(tile.shape[0], 1.6, detail_seed))
    return Texture(_pyramid(tile.clip(0.05, 3.0)), tile_metres)


def _noise_texture(contrast: float, tile_metres: float, seed: int, beta: float, size: int = 512) -> Texture:
    tile = (1.0 + contrast * periodic_noise(size, beta, seed)).clip(0.05, 3.0)
    return Texture(_pyramid(tile), tile_metres)


@functools.cache
def texture_bank() -> dict[str, Texture]:
    """All textures, built once per process (about 0.3 s)."""
    return {
        "asphalt": _photo_texture("gravel", 0.22, 1.6, 1, 0.08),
        "paving": _photo_texture("gravel", 0.15, 1.2, 2, 0.06),
        "brick": _photo_texture("brick", 0.35, 1.6, 3, 0.08),
        "stone": _photo_texture("gravel", 0.28, 3.0, 4, 0.10),
        "plaster": _photo_texture("moon", 0.18, 5.0, 5, 0.10),
        "concrete": _photo_texture("moon", 0.25, 3.0, 6, 0.08),
        "grass": _photo_texture("grass", 0.40, 1.5, 7, 0.15),
        "leaves": _photo_texture("grass", 0.55, 2.2, 8, 0.25),
        "wood": _noise_texture(0.12, 2.0, 9, 1.2),
        "glass": _noise_texture(0.10, 20.0, 10, 2.0),
        "fine": _noise_texture(0.06, 1.0, 11, 1.0),
        "clouds": _noise_texture(1.0, 1.0, 12, 1.9, size=512),
    }
