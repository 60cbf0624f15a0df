"""Subprocess harness shared by the benchmark scripts.

Every measurement runs in a fresh Python process so that `ru_maxrss` (peak resident memory,
which sees native allocations that `tracemalloc` misses) belongs to one configuration only,
and so that each process imports exactly one backend. A worker prints one line
`BENCH_RESULT {json}` on stdout; the parent collects it.
"""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).absolute().parents[1]
RESULT_PREFIX = "BENCH_RESULT "


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def rss_mb() -> float:
    """Current resident set size of this process (Linux /proc), MiB."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: fall back to the peak
        return max_rss_mb()


def max_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def system_info() -> dict:
    return {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": load_average(),
    }


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_calls(fn, repeats: int, warmup: int = 1) -> dict:
    """Calls `fn` (which must block until its result is ready) `warmup` + `repeats` times."""
    first = _seconds(fn) if warmup else None
    for _ in range(warmup - 1):
        fn()
    return {"first_call_s": first, **time_alternating({"fn": fn}, repeats, warmup=0)["fn"]}


def time_alternating(calls: dict, rounds: int, warmup: int = 1) -> dict[str, dict]:
    """Times several blocking calls in turn, the order reversed every other round.

    Neighbouring calls of two functions then see the same machine speed (it drifts by tens
    of percent within minutes here), so the ratio of the i-th times of two calls is a paired
    measurement. Returns `time_calls`-style timings per name.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(rounds):
        for name in alternating(list(calls), round_index):
            times[name].append(_seconds(calls[name]))
    return {
        name: {
            "times_s": t,
            "median_s": statistics.median(t) if t else None,
            "min_s": min(t) if t else None,
        }
        for name, t in times.items()
    }


def time_spec(spec: dict, call, prepare) -> dict:
    """Worker side: `{"timing": ...}` of `call`; with `paired_with` in the spec, the model that
    `prepare` (spec → (facts, call)) builds from the spec updated by `paired_with` joins it,
    calls alternating: `{"paired_info": facts, "paired_timing": {config: timing}}`."""
    repeats, warmup = int(spec.get("repeats", 3)), int(spec.get("warmup", 1))
    if not spec.get("paired_with"):
        return {"timing": time_calls(call, repeats, warmup)}
    other = {**spec, **spec["paired_with"]}
    info, other_call = prepare(other)
    calls = {spec["config"]: call, other["config"]: other_call}
    return {"paired_info": info, "paired_timing": time_alternating(calls, repeats, warmup)}


def median_interval(values: list[float], level: float = 0.9, resamples: int = 2000,
                    seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median of `values`."""
    rng = random.Random(seed)
    medians = sorted(
        statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples)
    )
    tail = int(round((1 - level) / 2 * resamples))
    return medians[tail], medians[resamples - 1 - tail]


def numpy_matmul_peak(n: int = 2048, repeats: int = 10) -> dict:
    """GFLOP/s of an fp32 n×n NumPy matmul (2·n³ FLOPs), median of `repeats` calls."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    timing = time_calls(lambda: a @ b, repeats, warmup=2)
    return {"library": "numpy", "n": n, "gflops": 2 * n**3 / timing["median_s"] / 1e9, **timing}


def emit(result: dict) -> None:
    """Worker side: hands the result to the parent."""
    result.setdefault("max_rss_mb", max_rss_mb())
    result.setdefault("load_average_end", load_average())
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_worker(
    module: str,
    spec: dict,
    *,
    python: str | None = None,
    env: dict | None = None,
    timeout: float = 1800,
) -> dict:
    """Runs `python -m module <json spec>` in a fresh process; returns its result dict.

    A worker that crashes, times out or prints no result gives `{"error": ...}` with the end of
    its output, so one failing configuration does not stop a whole run.
    """
    full_env = dict(os.environ)
    # The repository root first, so `benchmarks` imports; keep a caller's PYTHONPATH after it.
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (full_env.get("PYTHONPATH", ""), str(ROOT)) if p
    )
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    full_env.update(env or {})
    cmd = [python or sys.executable, "-m", module, json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, env=full_env, cwd=os.getcwd(), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as err:
        return {"error": f"timed out after {timeout:.0f} s", "spec": spec, "tail": str(err)[-500:]}
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            result["process_wall_s"] = wall
            return result
    tail = (proc.stdout[-1500:] + "\n" + proc.stderr[-3000:]).strip()
    return {"error": f"worker exited with code {proc.returncode}", "spec": spec, "tail": tail}


def alternating(jobs: list | tuple, round_index: int) -> list | tuple:
    """The jobs of a round, reversed every other round: a drifting machine speed (it moves
    by up to 30% within minutes here) then favours no job."""
    return jobs[::-1] if round_index % 2 else jobs


def median_ratio(numerators: list, denominators: list) -> float:
    """Median over rounds of numerator / denominator, skipping rounds where either is missing."""
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True) if a and b]
    return statistics.median(ratios)


def save_json(path: Path | str, payload: dict) -> Path:
    """Writes results atomically: an interrupted run leaves the previous file whole.

    (Not `keras_vtn.io_utils.write_json`: workers import this module under the reference
    implementations' Python, where importing keras_vtn would import Keras.)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


def wait_for_quiet(max_load: float | None, timeout_s: float = 0.0) -> list[float]:
    """Waits (up to `timeout_s`) until the 1-minute load average is below `max_load`."""
    deadline = time.time() + timeout_s
    while max_load is not None and os.getloadavg()[0] >= max_load and time.time() < deadline:
        time.sleep(10)
    return load_average()
