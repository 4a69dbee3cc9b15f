"""Wall-clock timing of named stages, so every result can say where its time went."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Adds the seconds spent inside the block to ``timings[stage]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def repeated_milliseconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, float]:
    """(median, min) wall time of ``run`` in ms over ``repeats`` calls after ``warmup`` calls (benchmarks)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)
