"""Side-by-side benchmark harness: each configuration runs in its own process.

A configuration is a *target*, ``"module:function"``, called with keyword arguments in a fresh
Python process; it does its set-up and returns a zero-argument ``step`` callable, which the child
times (one warm-up call, then repeats, median reported). The parent watches the child's resident
memory (RSS, the child and its descendants) and kills it when it passes ``rss_limit_mb`` or runs
past ``timeout_s``: a peer that runs out of memory or time is reported as such instead of taking
the machine down.

Results are :class:`Measurement` records, written as JSON to ``benchmarks/results/`` by the scripts,
and rendered as markdown tables with ratios to a baseline by :func:`markdown_table`.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "RESULTS_DIR",
    "Measurement",
    "machine_info",
    "markdown_table",
    "measure",
    "save_results",
]


@dataclass
class Measurement:
    """One configuration's outcome.

    Attributes:
        name: what ran (e.g. ``"tripletkit all"``).
        config: the keyword arguments of the target.
        status: ``"ok"``, ``"oom"`` (passed the RSS limit), ``"timeout"`` or ``"error"``.
        median_s: median seconds of one step (None unless ok).
        times_s: every timed step.
        peak_rss_mb: the largest RSS seen for the process tree, in MiB (also for oom/timeout).
        peak_gpu_mb: the CUDA allocator's peak (``torch.cuda.max_memory_allocated``), in MiB,
            when the target used a CUDA device.
        detail: the error message, or what the target reported (``extra``).
    """

    name: str
    config: dict[str, Any]
    status: str
    median_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    peak_rss_mb: float | None = None
    detail: Any = None
    peak_gpu_mb: float | None = None


_CHILD = r"""
import importlib, json, resource, statistics, sys, time
target, kwargs, repeats, min_time, warmup = json.loads(sys.argv[1])
module_name, function_name = target.split(":")
sys.path.insert(0, {bench_dir!r})
step = getattr(importlib.import_module(module_name), function_name)(**kwargs)
extra = getattr(step, "extra", None)
if warmup:
    step()
times = []
start = time.perf_counter()
while len(times) < repeats or (time.perf_counter() - start < min_time and len(times) < 50):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
if callable(extra):
    extra = extra()
gpu = None
torch = sys.modules.get("torch")
if torch is not None and torch.cuda.is_initialized():
    gpu = torch.cuda.max_memory_allocated()
print("@@RESULT@@" + json.dumps({{"times": times, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "gpu_bytes": gpu, "extra": extra}}))
"""


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure(
    name: str,
    target: str,
    config: dict[str, Any],
    *,
    repeats: int = 3,
    warmup: bool = True,
    min_time_s: float = 0.0,
    timeout_s: float = 600.0,
    rss_limit_mb: float = 20_000.0,
    env: dict[str, str] | None = None,
) -> Measurement:
    """Run ``target(**config)`` in a child process and time its step.

    Args:
        name: label of the row.
        target: ``"module:function"`` importable from ``benchmarks/``; returns the step callable.
        config: keyword arguments of the target (JSON-serialisable).
        repeats: timed steps (after one untimed warm-up step when ``warmup``).
        min_time_s: keep timing (up to 50 steps) until this much time has passed.
        timeout_s: wall-clock limit for the child, set-up included.
        rss_limit_mb: kill the child when its process tree's RSS passes this.
        env: extra environment variables for the child.
    """
    child_env = dict(os.environ)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT / "src"), child_env.get("PYTHONPATH", "")]
    )
    child_env.update(env or {})
    code = _CHILD.format(bench_dir=str(Path(__file__).resolve().parent))
    argv = [sys.executable, "-c", code, json.dumps([target, config, repeats, min_time_s, warmup])]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env
    )
    watched = psutil.Process(proc.pid)
    peak = 0
    start = time.monotonic()
    status = None
    while proc.poll() is None:
        peak = max(peak, _tree_rss(watched))
        if peak > rss_limit_mb * 2**20:
            status = "oom"
        elif time.monotonic() - start > timeout_s:
            status = "timeout"
        if status:
            for p in [*watched.children(recursive=True), watched]:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            proc.wait()
            return Measurement(name, config, status, peak_rss_mb=peak / 2**20)
        time.sleep(0.02)
    stdout, stderr = proc.communicate()
    result_line = next(
        (line for line in stdout.splitlines() if line.startswith("@@RESULT@@")), None
    )
    if proc.returncode != 0 or result_line is None:
        oom = "out of memory" in stderr.lower() or proc.returncode in (-9, 137)
        message = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {proc.returncode}"
        return Measurement(
            name, config, "oom" if oom else "error", peak_rss_mb=peak / 2**20, detail=message
        )
    result = json.loads(result_line[len("@@RESULT@@") :])
    peak = max(peak, result["maxrss_kb"] * 1024)
    return Measurement(
        name,
        config,
        "ok",
        median_s=statistics.median(result["times"]),
        times_s=result["times"],
        peak_rss_mb=peak / 2**20,
        detail=result["extra"],
        peak_gpu_mb=None if result.get("gpu_bytes") is None else result["gpu_bytes"] / 2**20,
    )


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "max_rss_self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def save_results(stem: str, measurements: list[Measurement], extra: dict | None = None) -> Path:
    """Write ``benchmarks/results/<stem>.json`` and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{stem}.json"
    payload = {
        "machine": machine_info(),
        "measurements": [asdict(m) for m in measurements],
        **(extra or {}),
    }
    path.write_text(json.dumps(payload, indent=2))
    return path


def format_outcome(m: Measurement) -> str:
    """``0.123 s / 456 MiB`` (``/ 789 MiB GPU`` on a CUDA device: the allocator's peak), or
    ``out of memory (> 20 GB)`` / ``timeout`` / ``error``."""
    if m.status == "ok":
        if m.peak_gpu_mb is not None:
            return f"{m.median_s:.4f} s / {m.peak_gpu_mb:,.0f} MiB GPU"
        return f"{m.median_s:.3f} s / {m.peak_rss_mb:,.0f} MiB"
    if m.status == "oom":
        if str(m.config.get("device", "cpu")).startswith("cuda") and "CUDA" in str(m.detail):
            return "out of GPU memory"
        return f"out of memory (> {m.peak_rss_mb / 1024:.1f} GiB)"
    if m.status == "timeout":
        return "timeout"
    return f"error: {m.detail}"


def markdown_table(rows: list[list[str]], header: list[str]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def ratio(numerator: Measurement, denominator: Measurement) -> str:
    """``numerator / denominator`` of median times as ``2.5×``, or ``-`` when either failed."""
    if numerator.status != "ok" or denominator.status != "ok":
        return "-"
    return f"{numerator.median_s / denominator.median_s:.2f}×"
