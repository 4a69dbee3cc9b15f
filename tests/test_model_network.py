"""The network's shapes, trainable parts and model file (round trip, clear errors)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cups_ros.core.config import ConfigError
from cups_ros.features.vit import VitArchitecture
from cups_ros.model.config import NetworkConfig
from cups_ros.model.model_file import ModelFileError, load_model, model_metadata, save_model
from cups_ros.model.network import PanopticTrackingNet, output_size

SMALL_VIT = VitArchitecture(embed_dim=96, depth=3, num_heads=2, mlp_hidden_dim=192)


def small_network(**config: object) -> PanopticTrackingNet:
    return PanopticTrackingNet(
        NetworkConfig(num_classes=5, thing_classes=[3], **config), architecture=SMALL_VIT
    )


def test_outputs_at_a_quarter_of_the_patch_grid_for_any_patch_multiple() -> None:
    network = small_network(embedding_dim=8).eval()
    for height, width in ((56, 112), (70, 98)):
        with torch.no_grad():
            outputs = network(torch.randn(2, 3, height, width))
        grid = output_size(height, width)
        assert [tuple(t.shape) for t in outputs] == [(2, c, *grid) for c in (5, 1, 2, 8)]
        assert float(outputs.centre_heatmap.min()) >= 0 and float(outputs.centre_heatmap.max()) <= 1
        assert torch.allclose(outputs.embedding.norm(dim=1), torch.ones(2, *grid), atol=1e-5)


def test_backbone_trains_as_configured() -> None:
    def trainable(network: PanopticTrackingNet) -> set[str]:
        return {
            name.split(".")[1] + (f".{name.split('.')[2]}" if name.startswith("backbone.blocks") else "")
            for name, p in network.named_parameters()
            if p.requires_grad and name.startswith("backbone")
        }

    assert trainable(small_network()) == set()
    assert trainable(small_network(backbone_trainable="last_blocks", trainable_blocks=2)) == {
        "blocks.1",
        "blocks.2",
        "norm",
    }
    assert len(trainable(small_network(backbone_trainable="full"))) > 4
    assert all(p.requires_grad for p in small_network().heads.parameters())


def test_config_rejects_sizes_that_are_no_patch_multiple_and_foreign_thing_classes() -> None:
    with pytest.raises(ConfigError, match="input_width"):
        NetworkConfig(input_width=100)
    with pytest.raises(ConfigError, match="thing_classes"):
        NetworkConfig(num_classes=4, thing_classes=[4])
    assert NetworkConfig(num_classes=3).names == ["c00", "c01", "c02"]


def test_model_file_round_trip_and_clear_errors(tmp_path: Path) -> None:
    network = small_network(backbone_trainable="last_blocks", trainable_blocks=1).eval()
    path = tmp_path / "model.pt"
    save_model(network, path, {"steps": 7})
    loaded = load_model(path)
    images = torch.randn(1, 3, 56, 112)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(network(images), loaded(images), strict=True))
    assert loaded.config == network.config and model_metadata(path) == {"steps": 7}
    assert any(p.requires_grad for p in loaded.backbone.blocks[-1].parameters())
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="corrupt"):
        load_model(truncated)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ModelFileError, match="is not a"):
        load_model(other)


def test_a_model_file_can_reference_its_frozen_backbone_instead_of_carrying_it(tmp_path: Path) -> None:
    from cups_ros.model.model_file import read_model_file

    network = PanopticTrackingNet.with_pretrained_backbone(NetworkConfig(thing_classes=[1], num_classes=4))
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in network.heads.parameters():
            parameter.normal_(0, 0.1)
    full, light = tmp_path / "full.pt", tmp_path / "light.pt"
    save_model(network, full)
    save_model(network, light, backbone="reference")
    assert light.stat().st_size < full.stat().st_size / 10  # heads only: ~5 MB instead of ~93 MB
    loaded = load_model(light)
    for key, value in network.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    state = read_model_file(light)
    state["backbone_reference"]["sha256"] = "0" * 64  # trained on other backbone weights
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="backbone weights"):
        load_model(tmp_path / "other.pt")
