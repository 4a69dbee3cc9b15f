"""Latency of the panoptic-tracking network in torch and onnxruntime, its FLOPs and parameters.

    python training/benchmark_network.py [--model MODEL.pt] [--sizes 280x560,518x1036] [--threads 2]
        [--repeats 20] [--warmup 3] [--frame-size 512x1024] [--onnx-dir DIR] [--output results.json]

Per input size, on --threads CPU threads (torch.set_num_threads and onnxruntime's intra-op threads):
inference latency per frame (batch 1) of torch and onnxruntime and their ratio, the Predictor's
pre-processing (normalise + resize a --frame-size uint8 frame) and post-processing (the shared
grouping, back to the frame size), FLOPs (torch.utils.flop_counter, attention counted through the math
kernel) and parameters of the backbone and the heads. With CUDA, the same for torch on the GPU (and
onnxruntime's CUDA provider and TensorRT where installed). Each figure is the median over --repeats
runs after --warmup runs (min in the JSON). Without --model, the network has the pretrained backbone
and untrained heads: same cost, except that post-processing time grows with the number of instances
(untrained heads find few), so measure it with a trained model. The ONNX files are exported to
--onnx-dir (default: a temporary folder) unless a file there already comes from the same weights.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from cups_ros.core.files import write_json_atomic
from cups_ros.features.cache import file_sha256
from cups_ros.geometry.timing import repeated_milliseconds
from cups_ros.model import NetworkConfig, PanopticTrackingNet, load_model, postprocess
from cups_ros.runtime import (
    InferenceEngine,
    OnnxModelError,
    OnnxRuntimeEngine,
    Predictor,
    TorchEngine,
    export_onnx,
    onnx_file_name,
    parse_size,
    read_onnx_metadata,
)
from cups_ros.runtime.export import state_dict_sha256


def parse_sizes(text: str) -> list[tuple[int, int]]:
    try:
        return [parse_size(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_frame_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"frame size {text!r} is not HEIGHTxWIDTH") from None
    return height, width


def timed(run: Callable[[], object], repeats: int, warmup: int) -> dict[str, float]:
    """Median and min wall time in ms after the warm-up runs."""
    median, minimum = repeated_milliseconds(run, repeats, warmup)
    return {"median_ms": median, "min_ms": minimum}


def parameter_counts(network: PanopticTrackingNet) -> dict[str, int]:
    backbone = sum(parameter.numel() for parameter in network.backbone.parameters())
    heads = sum(parameter.numel() for parameter in network.heads.parameters())
    return {"backbone": backbone, "heads": heads, "total": backbone + heads}


def flop_counts(network: PanopticTrackingNet, size: tuple[int, int]) -> dict[str, float]:
    """GFLOPs (multiply and add counted separately) of one frame, backbone and heads apart.

    The math attention kernel, because FlopCounterMode has no formula for the fused CPU kernel.
    """
    device = next(network.parameters()).device
    counter = FlopCounterMode(display=False, depth=2)
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        network(torch.zeros(1, 3, *size, device=device))
    counts = counter.get_flop_counts()
    name = type(network).__name__
    module_total = lambda module: sum(counts.get(f"{name}.{module}", {}).values()) / 1e9  # noqa: E731
    return {
        "backbone": module_total("backbone"),
        "heads": module_total("heads"),
        "total": counter.get_total_flops() / 1e9,
    }


def onnx_for(network: PanopticTrackingNet, size: tuple[int, int], folder: Path, source_hash: str) -> Path:
    """The ONNX file of this size in the folder, exported unless it already holds these weights."""
    path = folder / onnx_file_name(size)
    try:
        if read_onnx_metadata(path).source_model_sha256 == source_hash:
            return path
    except OnnxModelError:
        pass
    (path,) = export_onnx(network, path, [size], source_model_sha256=source_hash)
    return path


def engine_timings(
    engine: InferenceEngine, frame: np.ndarray, repeats: int, warmup: int
) -> dict[str, dict[str, float]]:
    """Inference of one prepared frame, and the Predictor's pre- and post-processing around it."""
    predictor = Predictor(engine)
    prepared = predictor.prepare(frame)
    outputs = engine.infer(prepared)
    frame_size = frame.shape[:2]
    return {
        "preprocess": timed(lambda: predictor.prepare(frame), repeats, warmup),
        "inference": timed(lambda: engine.infer(prepared), repeats, warmup),
        "postprocess": timed(
            lambda: postprocess(
                outputs, predictor.thing_classes, engine.input_size, frame_size, predictor.postprocess_config
            ),
            repeats,
            warmup,
        ),
    }


def cuda_timings(
    network: PanopticTrackingNet,
    onnx_path: Path,
    size: tuple[int, int],
    frame: np.ndarray,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """torch on CUDA, and onnxruntime CUDA / TensorRT where this machine has them."""
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(0)}
    gpu_network = copy.deepcopy(network).to("cuda")
    results["torch_cuda"] = engine_timings(
        TorchEngine(gpu_network, input_size=size), frame, args.repeats, args.warmup
    )
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        engine = OnnxRuntimeEngine(onnx_path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        results["onnxruntime_cuda"] = engine_timings(engine, frame, args.repeats, args.warmup)
    try:
        from cups_ros.runtime import TensorRTEngine, TensorRTSettings, ensure_engine

        settings = TensorRTSettings(precision="fp16" if args.fp16 else "fp32")
        engine_path = ensure_engine(onnx_path, settings).engine_path
        results[f"tensorrt_{settings.precision}"] = engine_timings(
            TensorRTEngine(engine_path), frame, args.repeats, args.warmup
        )
    except ImportError as error:
        results["tensorrt"] = f"skipped: {error}"
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=None, help="model file (default: pretrained backbone)")
    parser.add_argument("--sizes", type=parse_sizes, default=None, help="HxW[,HxW...] (default: the model's)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--frame-size", type=parse_frame_size, default=(512, 1024), help="camera frame HxW")
    parser.add_argument("--onnx-dir", type=Path, default=None, help="where the ONNX files are kept")
    parser.add_argument("--fp16", action="store_true", help="TensorRT in FP16 (CUDA machines)")
    parser.add_argument("--no-cuda", action="store_true", help="CPU only even where CUDA is available")
    parser.add_argument("--output", type=Path, default=None, help="JSON results (default: print only)")
    return parser


def print_table(results: dict[str, Any]) -> None:
    print(f"\nthreads {results['threads']}, frame {results['frame_size'][0]}x{results['frame_size'][1]}")
    parameters = results["parameters"]
    print(
        f"parameters: backbone {parameters['backbone'] / 1e6:.2f} M, "
        f"heads {parameters['heads'] / 1e6:.2f} M, total {parameters['total'] / 1e6:.2f} M"
    )
    header = f"{'input':>9} {'GFLOPs (bb+heads)':>20} {'torch ms':>9} {'onnxrt ms':>10} {'torch/ort':>9}"
    print(header + f" {'pre ms':>7} {'post ms':>8}")
    for entry in results["sizes"]:
        flops = entry["gflops"]
        torch_ms = entry["cpu"]["torch"]["inference"]["median_ms"]
        onnx_ms = entry["cpu"]["onnxruntime"]["inference"]["median_ms"]
        print(
            f"{entry['input_size'][0]:>4}x{entry['input_size'][1]:<4} "
            f"{flops['total']:>6.1f} ({flops['backbone']:.1f}+{flops['heads']:.1f})".ljust(31)
            + f"{torch_ms:>9.1f} {onnx_ms:>10.1f} {entry['cpu']['torch_over_onnxruntime']:>9.2f}"
            f" {entry['cpu']['onnxruntime']['preprocess']['median_ms']:>7.1f}"
            f" {entry['cpu']['onnxruntime']['postprocess']['median_ms']:>8.1f}"
        )
        for name, timing in entry.get("cuda", {}).items():
            if isinstance(timing, dict):
                print(f"{'':>31}{name}: {timing['inference']['median_ms']:.2f} ms inference")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model is not None:
        network = load_model(args.model)
        source_hash = file_sha256(args.model)
    else:
        network = PanopticTrackingNet.with_pretrained_backbone(NetworkConfig()).eval()
        source_hash = state_dict_sha256(network)
    config = network.config
    sizes = args.sizes or [(config.input_height, config.input_width)]
    frame = np.random.default_rng(0).integers(0, 256, size=(*args.frame_size, 3), dtype=np.uint8)
    results: dict[str, Any] = {
        "model": str(args.model) if args.model else "pretrained backbone, untrained heads",
        "threads": args.threads,
        "repeats": args.repeats,
        "frame_size": list(args.frame_size),
        "torch": torch.__version__,
        "parameters": parameter_counts(network),
        "sizes": [],
    }
    with tempfile.TemporaryDirectory() as temporary:
        onnx_dir = args.onnx_dir or Path(temporary)
        for size in sizes:
            onnx_path = onnx_for(network, size, onnx_dir, source_hash)
            torch_timings = engine_timings(
                TorchEngine(network, input_size=size), frame, args.repeats, args.warmup
            )
            onnx_engine = OnnxRuntimeEngine(onnx_path, threads=args.threads)
            onnx_timings = engine_timings(onnx_engine, frame, args.repeats, args.warmup)
            entry: dict[str, Any] = {
                "input_size": list(size),
                "gflops": flop_counts(network, size),
                "cpu": {
                    "torch": torch_timings,
                    "onnxruntime": onnx_timings,
                    "torch_over_onnxruntime": torch_timings["inference"]["median_ms"]
                    / onnx_timings["inference"]["median_ms"],
                },
            }
            if torch.cuda.is_available() and not args.no_cuda:
                entry["cuda"] = cuda_timings(network, onnx_path, size, frame, args)
            results["sizes"].append(entry)
            print(f"measured {size[0]}x{size[1]}", flush=True)
    print_table(results)
    if args.output:
        write_json_atomic(args.output, results)
        print(f"\n{args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
