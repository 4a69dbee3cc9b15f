"""Export a model file to ONNX (one file per input size), check it, compare it with torch, build TensorRT.

    python training/export.py MODEL.pt --output DIR [--sizes 280x560,322x644] [--opset 18]
        [--external-data] [--check-parity random|sim|FRAMES_DIR] [--frames 4] [--no-parity]
        [--tensorrt [--fp16] [--workspace-mb 1024] [--max-batch 1] [--build-only]]
    python training/export.py DIR/model_280x560.onnx --tensorrt --fp16 --build-only

Every ONNX file passes onnx.checker. The parity check runs the same frames through torch and
onnxruntime (and the TensorRT engines, with --tensorrt on a GPU) and reports the largest absolute
difference per output and whether the panoptic maps after the shared post-processing are identical;
it fails (exit 1) above --tolerance (and, with --require-identical, on any panoptic difference:
pixels whose top two logits tie within float rounding can flip, so a few may differ). Frames:
``random`` (seeded noise images), ``sim`` (rendered by cups_ros.sim) or a folder of PNG files
(searched recursively, e.g. a simulator split's ``*/left``). Given ONNX files instead of a model,
nothing is exported: ``--tensorrt --build-only`` then builds (or finds in the cache) their engines
and exits, which is what a vehicle does once after a model update. A report goes to
``DIR/export_report.json``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cups_ros.core.files import write_json_atomic
from cups_ros.features.cache import file_sha256
from cups_ros.model import PanopticTrackingNet, load_model
from cups_ros.model.model_file import model_metadata, save_model
from cups_ros.runtime import (
    OnnxRuntimeEngine,
    Predictor,
    TensorRTEngine,
    TensorRTSettings,
    TorchEngine,
    check_onnx_file,
    differing_pixels,
    ensure_engine,
    export_onnx,
    max_abs_differences,
    parse_size,
    predictions_equal,
)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    try:
        return [parse_size(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", type=Path, nargs="+", help="a model file (.pt), or exported .onnx files")
    parser.add_argument("--output", type=Path, default=None, help="folder for the ONNX files (with a .pt)")
    parser.add_argument("--sizes", type=parse_sizes, default=None, help="HxW[,HxW...] (default: the model's)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument("--external-data", action="store_true", help="weights in <name>.onnx.data")
    parser.add_argument(
        "--check-parity", default="random", metavar="SOURCE", help="random (default), sim, or a PNG folder"
    )
    parser.add_argument("--frames", type=int, default=4, help="frames for the parity check (default 4)")
    parser.add_argument("--no-parity", action="store_true", help="skip the parity check")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max abs difference allowed (fp32)")
    parser.add_argument(
        "--require-identical", action="store_true", help="fail on any panoptic difference too"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of onnxruntime and torch")
    parser.add_argument("--tensorrt", action="store_true", help="also build (cached) TensorRT engines")
    parser.add_argument("--fp16", action="store_true", help="TensorRT engines in FP16")
    parser.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT builder workspace (MiB)")
    parser.add_argument("--max-batch", type=int, default=1, help="largest batch of the TensorRT engines")
    parser.add_argument("--build-only", action="store_true", help="build the engines and exit (no checks)")
    parser.add_argument(
        "--heads-only",
        type=Path,
        default=None,
        help="also write the model as a heads-only model file that references its frozen backbone "
        "(~5 MB; how the package ships its default model, cups_ros/data/default_model.pt)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def load_frames(source: str, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """uint8 RGB frames for the parity check; random ones are 1.5x the input size (so they get resized)."""
    if source == "random":
        rng = np.random.default_rng(0)
        shape = (round(size[0] * 1.5), round(size[1] * 1.5), 3)
        return [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(count)]
    if source == "sim":
        from cups_ros.sim.config import SimConfig
        from cups_ros.sim.generate import SequenceGenerator, sequence_seed

        config = SimConfig().with_resolution(size[1] * 2, size[0] * 2)
        generator = SequenceGenerator(config, sequence_seed("sample", 0), "oldtown", count, parallel=False)
        return [frame.left for frame in generator.frames_from(0)]
    import cv2

    folder = Path(source)
    if not folder.is_dir():
        raise ValueError(f"--check-parity: {folder} is neither random, sim nor a folder")
    paths = sorted(folder.rglob("*.png"))[:count]
    if not paths:
        raise ValueError(f"--check-parity: no PNG files under {folder}")
    frames = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read {path}")
        frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return frames


def compare(reference: Predictor, other: Predictor, frames: list[np.ndarray]) -> dict[str, Any]:
    """Max abs difference per output over the frames and how many panoptic maps are identical."""
    worst: dict[str, float] = {}
    identical, pixels, total = 0, 0, 0
    for frame in frames:
        expected, found = reference.predict(frame), other.predict(frame)
        for name, value in max_abs_differences(expected.outputs, found.outputs).items():
            worst[name] = max(worst.get(name, 0.0), value)
        identical += predictions_equal(expected.prediction, found.prediction)
        pixels += differing_pixels(expected.prediction, found.prediction)
        total += expected.prediction.panoptic.size
    return {
        "max_abs_difference": worst,
        "identical_panoptic": identical,
        "frames": len(frames),
        "differing_panoptic_pixels": pixels,
        "differing_panoptic_fraction": pixels / max(total, 1),
    }


def report_comparison(label: str, result: dict[str, Any]) -> None:
    differences = ", ".join(f"{name} {value:.2e}" for name, value in result["max_abs_difference"].items())
    print(f"  {label}: max |diff| {differences}")
    print(
        f"  {label}: panoptic identical on {result['identical_panoptic']}/{result['frames']} frames "
        f"({result['differing_panoptic_pixels']} pixels differ, "
        f"{result['differing_panoptic_fraction']:.2e} of all)"
    )


def passes(result: dict[str, Any], tolerance: float, require_identical: bool) -> bool:
    """Within the tolerance; identical panoptic maps only when asked (near-tie argmax pixels may flip)."""
    within = max(result["max_abs_difference"].values()) <= tolerance
    return within and (not require_identical or result["identical_panoptic"] == result["frames"])


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    model_files = [path for path in args.inputs if path.suffix != ".onnx"]
    network: PanopticTrackingNet | None = None
    if model_files:
        if len(args.inputs) != 1 or args.output is None:
            raise ValueError("give one model file and --output DIR (or only .onnx files)")
        network = load_model(model_files[0], "cpu")
        if args.heads_only is not None:
            if not network.backbone_frozen:
                raise ValueError(
                    f"{model_files[0]} trained its backbone: it cannot reference it (--heads-only)"
                )
            metadata = {**model_metadata(model_files[0]), "heads_only_of": file_sha256(model_files[0])}
            save_model(network, args.heads_only, metadata, backbone="reference")
            print(f"wrote {args.heads_only} (heads only, backbone referenced)")
        onnx_paths = export_onnx(
            network,
            args.output,
            args.sizes,
            opset=args.opset,
            external_data=True if args.external_data else None,
            source_model_sha256=file_sha256(model_files[0]),
        )
        report_folder = args.output
    else:
        onnx_paths = list(args.inputs)
        report_folder = onnx_paths[0].parent
    report: dict[str, Any] = {"files": {}}
    ok = True
    for path in onnx_paths:
        metadata = check_onnx_file(path)
        data = (
            f" + {', '.join(file.name for file in metadata.external_data)}" if metadata.external_data else ""
        )
        print(f"{path}{data}: onnx.checker passed ({metadata.input_size[0]}x{metadata.input_size[1]})")
        entry: dict[str, Any] = {"input_size": list(metadata.input_size)}
        report["files"][str(path)] = entry
        if args.tensorrt:
            settings = TensorRTSettings(
                precision="fp16" if args.fp16 else "fp32",
                workspace_bytes=args.workspace_mb << 20,
                max_batch=args.max_batch,
            )
            cached = ensure_engine(path, settings)
            print(
                f"  TensorRT engine {cached.engine_path} ({'built' if cached.built else 'reused from cache'})"
            )
            entry["tensorrt_engine"] = str(cached.engine_path)
        if args.build_only or args.no_parity:
            continue
        frames = load_frames(args.check_parity, args.frames, metadata.input_size)
        if network is None:
            print("  (no model file given: parity needs the .pt; skipped)")
            continue
        reference = Predictor(TorchEngine(network, input_size=metadata.input_size))
        onnxruntime = Predictor(OnnxRuntimeEngine(path, threads=args.threads))
        entry["onnxruntime"] = compare(reference, onnxruntime, frames)
        report_comparison("onnxruntime vs torch", entry["onnxruntime"])
        ok &= passes(entry["onnxruntime"], args.tolerance, args.require_identical)
        if args.tensorrt:
            cuda_reference = Predictor(TorchEngine(copy.deepcopy(network), "cuda", metadata.input_size))
            engine = Predictor(TensorRTEngine(entry["tensorrt_engine"]))
            entry["tensorrt"] = compare(cuda_reference, engine, frames)
            report_comparison("TensorRT vs torch (CUDA)", entry["tensorrt"])
            # FP16 logits differ by more than the fp32 tolerance; only fp32 engines must pass it.
            ok &= args.fp16 or passes(entry["tensorrt"], args.tolerance, args.require_identical)
    report["passed"] = ok
    write_json_atomic(report_folder / "export_report.json", report)
    if not ok:
        print(f"export: parity check failed (tolerance {args.tolerance})", file=sys.stderr)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return run(args)
    except (ValueError, OSError, RuntimeError, ImportError) as error:
        if args.verbose:
            raise
        print(f"export: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
