"""Diagnostics for a worker process, switched on by environment variables; never on by default.

A benchmark puts this folder first on a worker's PYTHONPATH (`DIAG_PYTHONPATH`), so Python's
start-up imports it as `sitecustomize`; the worker's own code is unchanged.

    BENCH_GC_REPORT=FILE   hook gc.callbacks; at exit write the collections and their pauses
                           per generation to FILE (`bench.throughput --gc-probe`)
    BENCH_PRODUCER_RETRY_BACKOFF_MS=N
                           make N ms the default retry_backoff_ms of every AIOKafkaProducer
                           (aiokafka's is 100 ms), to test what a transactional producer's
                           retries cost (`--worker-env BENCH_PRODUCER_RETRY_BACKOFF_MS=10`)
    BENCH_TRACEMALLOC_REPORT=FILE
                           trace allocations (1 frame: slows the process); on SIGUSR1 write
                           the 30 source lines holding the most memory to FILE
                           (`bench.parked --tracemalloc`)
"""

import atexit
import gc
import json
import os
import time

_started: dict[int, float] = {}
_stats = {"collections": [0, 0, 0], "seconds": [0.0, 0.0, 0.0], "max_pause_s": [0.0, 0.0, 0.0]}


def _on_gc(phase: str, info: dict) -> None:
    generation = info["generation"]
    if phase == "start":
        _started[generation] = time.perf_counter()
        return
    pause = time.perf_counter() - _started.pop(generation, time.perf_counter())
    _stats["collections"][generation] += 1
    _stats["seconds"][generation] += pause
    _stats["max_pause_s"][generation] = max(_stats["max_pause_s"][generation], pause)


def _write() -> None:
    with open(os.environ["BENCH_GC_REPORT"], "w") as out:
        json.dump(
            {**_stats, "thresholds": gc.get_threshold(), "objects_at_exit": len(gc.get_objects())},
            out,
        )


def _patch_producer_backoff(ms: int) -> None:
    import functools

    import aiokafka

    original = aiokafka.AIOKafkaProducer.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("retry_backoff_ms", ms)
        original(self, *args, **kwargs)

    aiokafka.AIOKafkaProducer.__init__ = __init__


def _start_tracemalloc(path: str) -> None:
    import signal
    import tracemalloc

    tracemalloc.start(1)

    def dump(signum: int, frame: object) -> None:
        snapshot = tracemalloc.take_snapshot()
        stats = snapshot.statistics("lineno")
        top = [
            {"where": str(s.traceback[0]), "bytes": s.size, "blocks": s.count} for s in stats[:30]
        ]
        total = sum(s.size for s in stats)
        with open(path, "w") as out:
            json.dump({"traced_bytes": total, "top": top}, out)

    signal.signal(signal.SIGUSR1, dump)


if os.environ.get("BENCH_TRACEMALLOC_REPORT"):
    _start_tracemalloc(os.environ["BENCH_TRACEMALLOC_REPORT"])
if os.environ.get("BENCH_GC_REPORT"):
    gc.callbacks.append(_on_gc)
    atexit.register(_write)
if os.environ.get("BENCH_PRODUCER_RETRY_BACKOFF_MS"):
    _patch_producer_backoff(int(os.environ["BENCH_PRODUCER_RETRY_BACKOFF_MS"]))
