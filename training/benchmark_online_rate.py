"""Perception output rate with online learning off and on, same machine, same input (a ratio).

    python training/benchmark_online_rate.py --model BOOT.pt --fit FIT --sim SIM/test_0000 \\
        [--rate 10] [--seconds 90] [--seed-buffer BUFFER] [--output result.json]

Perception runs as the node runs it (AsyncPerception behind a latest-frame slot) on frames submitted
at ``--rate`` Hz; its output rate is processed frames per second. "On" adds the two learning
processes of ``online_learning:=true``, as the launch file starts them: pseudo-labelling of the same
stream and rounds of continued training, both at the configured CPU priority (idle by default).
``--seed-buffer`` copies an earlier buffer in, so that training runs from the start of the window.
Prints both rates, their ratio, and what the learners got done meanwhile.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cups_ros.core.config import apply_overrides, to_dict
from cups_ros.pipeline.perception import AsyncPerception, ModelConfig, PerceptionConfig
from cups_ros.sim.dataset import SimSequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--fit", type=Path, required=True, help="pseudo-label fit folder")
    parser.add_argument("--sim", type=Path, required=True, help="simulator sequence folder (the stream)")
    parser.add_argument("--rate", type=float, default=10.0, help="input frames per second")
    parser.add_argument("--seconds", type=float, default=90.0, help="measurement window per condition")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before each window")
    parser.add_argument("--frames", type=int, default=40, help="frames of the sequence, looped")
    parser.add_argument("--seed-buffer", type=Path, default=None)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="online config key=value"
    )
    parser.add_argument("--output", type=Path, default=None)
    return parser


def _frames(folder: Path, count: int) -> list:
    sequence = SimSequence(folder)
    return [sequence[i].stereo_frame(sequence.name) for i in range(min(count, len(sequence)))]


def _feed(submit: Any, frames: list, rate: float, stop: threading.Event) -> None:
    """Submits frames at ``rate`` Hz with increasing stamps (looping the sequence)."""
    import dataclasses

    period, index, start = 1.0 / rate, 0, time.monotonic()
    while not stop.is_set():
        frame = frames[index % len(frames)]
        stamp = int((time.time()) * 1e9)
        submit(dataclasses.replace(frame, stamp_ns=stamp, index=index))
        index += 1
        wait = start + index * period - time.monotonic()
        if wait > 0:
            stop.wait(wait)


def labelling_process(config_dict: dict, sim: str, frames: int, rate: float, stop: Any, report: Any) -> None:
    from cups_ros.core.config import from_dict
    from cups_ros.online.buffer import ReplayBuffer
    from cups_ros.online.learning import (
        AsyncPseudoLabelling,
        OnlineLearningConfig,
        lower_cpu_priority,
        open_labeller,
    )

    config = from_dict(OnlineLearningConfig, config_dict)
    priority = lower_cpu_priority(config.cpu_priority)
    import torch

    torch.set_num_threads(max(1, config.training.threads))
    labelling = AsyncPseudoLabelling(open_labeller(config), ReplayBuffer(config.buffer_dir, config.buffer))
    labelling.start()
    local_stop = threading.Event()
    feeder = threading.Thread(
        target=_feed, args=(labelling.submit, _frames(Path(sim), frames), rate, local_stop)
    )
    feeder.start()
    stop.wait()
    local_stop.set()
    feeder.join()
    labelling.stop(timeout=60)
    report.put(
        {
            "labeller_priority": priority,
            "labelled": labelling.stats.labelled,
            "skipped": dict(labelling.stats.skipped),
        }
    )


def training_process(config_dict: dict, stop: Any, report: Any) -> None:
    from cups_ros.core.config import from_dict
    from cups_ros.online.learning import (
        ContinualLearning,
        OnlineLearningConfig,
        lower_cpu_priority,
        open_online_learning,
    )

    config = from_dict(OnlineLearningConfig, config_dict)
    priority = lower_cpu_priority(config.cpu_priority)
    buffer, store = open_online_learning(config, buffer_writer=False)
    learning = ContinualLearning(config, buffer, store)
    rounds = 0
    while not stop.is_set():
        result = learning.run_round()
        if result is None:
            stop.wait(2.0)
        else:
            rounds += 1
    status = learning.status_snapshot()
    report.put(
        {
            "trainer_priority": priority,
            "rounds": rounds,
            "steps": status.steps_done,
            "promotions": status.promotions,
        }
    )


def measure_perception(
    model: Path, frames: list, rate: float, warmup: float, seconds: float
) -> dict[str, float]:
    config = PerceptionConfig(model=ModelConfig(path=str(model)))
    results: list[float] = []
    perception = AsyncPerception(config, lambda result: results.append(time.monotonic()))
    perception.start()
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(perception.submit, frames, rate, stop))
    feeder.start()
    time.sleep(warmup)
    start, before = time.monotonic(), len(results)
    time.sleep(seconds)
    done = len(results) - before
    elapsed = time.monotonic() - start
    stop.set()
    feeder.join()
    stats = perception.stats()
    perception.stop()
    return {
        "output_rate": done / elapsed,
        "frames": done,
        "seconds": elapsed,
        "mean_processing_ms": stats.mean_processing_ms,
    }


def main(argv: list[str] | None = None) -> int:
    from cups_ros.online.learning import OnlineLearningConfig

    args = build_parser().parse_args(argv)
    frames = _frames(args.sim, args.frames)
    work = Path(tempfile.mkdtemp(prefix="online_rate_"))
    config = OnlineLearningConfig(
        buffer_dir=str(work / "buffer"), store_dir=str(work / "models"), initial_model=str(args.model)
    )
    config = apply_overrides(OnlineLearningConfig, config, [f"labeller.fit={args.fit}", *args.overrides])
    if args.seed_buffer is not None:
        shutil.copytree(args.seed_buffer, config.buffer_dir)
    print(f"perception at {args.rate} Hz input, {args.seconds} s per condition; online learning off ...")
    off = measure_perception(args.model, frames, args.rate, args.warmup, args.seconds)
    print(f"  off: {off['output_rate']:.3f} frames/s ({off['mean_processing_ms']:.0f} ms per frame)")
    context = multiprocessing.get_context("spawn")
    stop, report = context.Event(), context.Queue()
    learners = [
        context.Process(
            target=labelling_process,
            args=(to_dict(config), str(args.sim), args.frames, args.rate, stop, report),
        ),
        context.Process(target=training_process, args=(to_dict(config), stop, report)),
    ]
    for process in learners:
        process.start()
    print("online learning on (pseudo-labelling + continued training processes) ...")
    on = measure_perception(args.model, frames, args.rate, args.warmup, args.seconds)
    stop.set()
    learned: dict[str, Any] = {}
    for _ in learners:
        learned.update(report.get(timeout=300))
    for process in learners:
        process.join(timeout=120)
    print(f"  on:  {on['output_rate']:.3f} frames/s ({on['mean_processing_ms']:.0f} ms per frame)")
    ratio = on["output_rate"] / off["output_rate"]
    print(f"output rate on / off: {ratio:.3f}  (learners meanwhile: {learned})")
    result = {
        "off": off,
        "on": on,
        "ratio_on_over_off": ratio,
        "learners": learned,
        "rate": args.rate,
        "config": to_dict(config),
    }
    if args.output is not None:
        from cups_ros.core.files import write_json_atomic

        write_json_atomic(args.output, json.loads(json.dumps(result, default=str)))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
