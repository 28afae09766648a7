"""Shared helpers for benchmark scripts: interleaved timing and markdown tables."""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def time_interleaved(funcs: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 1,
                     sync: Callable[[], object] | None = None) -> dict[str, float]:
    """Median seconds per call for each function, measured round-robin so that load from
    other processes hits every method alike. ``sync`` (``torch.cuda.synchronize``) runs before
    and after each timed call: the wall time then covers the device's work."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for f in funcs.values():
            f()
    samples: dict[str, list[float]] = {k: [] for k in funcs}
    names = list(funcs)
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            sync()
            t0 = time.perf_counter()
            funcs[name]()
            sync()
            samples[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def torch_device_header(title: str, script: str, device) -> str:
    """The opening lines of a GPU benchmark's results file: title, command, date, machine."""
    import sys

    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    command = " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]])
    return (f"# {title}\n\nCommand: `{command}`\n\n"
            f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
            f"Machine: {name}, Python {platform.python_version()}, torch {torch.__version__}")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere). Recorded with the
    instruction set torch's kernels use: float results, not only timings, differ between hosts
    (vector widths change the order of summation)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    return (
        f"{datetime.date.today().isoformat()}, {platform.machine()} {os.cpu_count()}-core CPU "
        f"({cpu_model()}; shared machine), Python {platform.python_version()}"
    )


def write_result(name: str, text: str) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    with open(path, "w") as fh:
        fh.write(text.rstrip() + "\n")
    return path
