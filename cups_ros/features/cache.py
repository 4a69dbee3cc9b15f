"""One-time conversions kept on disk, keyed by the sha256 of their source file."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cups_ros.core.files import atomic_path

CACHE_ENVIRONMENT_VARIABLE = "CUPS_ROS_CACHE"
CACHE_FORMAT = 1

_log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$CUPS_ROS_CACHE`` when set, else ``~/.cache/cups_ros``."""
    configured = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "cups_ros"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def read_cached_state_dict(cache_path: Path, source_sha256: str) -> dict[str, Tensor] | None:
    """The cached weights, or None when absent, stale (other source) or unreadable (then reconverted)."""
    if not cache_path.is_file():
        return None
    try:
        content: Any = torch.load(cache_path, map_location="cpu", weights_only=True)
    except Exception as error:
        _log.warning("cache %s is unreadable (%s): converting again", cache_path, error)
        return None
    if not isinstance(content, dict) or content.get("format") != CACHE_FORMAT:
        _log.warning("cache %s has an unknown format: converting again", cache_path)
        return None
    if content.get("source_sha256") != source_sha256:
        _log.info("cache %s was made from another source file: converting again", cache_path)
        return None
    return content["state_dict"]


def write_cached_state_dict(cache_path: Path, source_sha256: str, state_dict: dict[str, Tensor]) -> None:
    """Atomic, so a crash or a concurrent job never leaves a half-written cache."""
    content = {"format": CACHE_FORMAT, "source_sha256": source_sha256, "state_dict": state_dict}
    with atomic_path(cache_path) as temporary:
        torch.save(content, temporary)
