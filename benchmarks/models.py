"""Forward (or training-step) time per clip, peak memory and FLOP utilisation per model.

Each (configuration, batch, backend) runs in a fresh subprocess; the reference PyTorch model
for the same configuration runs right before it in the same invocation. Results are merged
into a JSON file (records keyed by config, batch, backend, mode), so subsets can be run at
different times; a markdown table is printed at the end (`python -m benchmarks.report`
regenerates it).

Examples:
    python -m benchmarks.models --configs laps_visformer_s_8 --backends tensorflow --batch 1
    python -m benchmarks.models --reference-dir /path/to/checkouts \\
        --reference-python /path/to/ref-venv/bin/python          # everything (hours on a CPU)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from benchmarks import configs
from benchmarks.harness import (
    alternating,
    load_average,
    median_ratio,
    numpy_matmul_peak,
    run_worker,
    save_json,
    system_info,
    wait_for_quiet,
)

BACKENDS = ("tensorflow", "jax", "torch")
# TensorFlow without XLA: what Keras' fit/predict use on a CPU-only machine (jit_compile="auto").
TF_NO_JIT = "tensorflow-nojit"
DEFAULT_OUT = Path("benchmarks/results/models.json")


def record_key(record: dict) -> str:
    spec = record.get("spec", {})
    name = spec.get("config") or spec.get("label") or spec.get("reference")
    if spec.get("overrides"):
        name += "@" + ",".join(f"{k}={v}" for k, v in sorted(spec["overrides"].items()))
    return f"{name}|b{spec.get('batch', 1)}|{record.get('backend')}|{spec.get('mode', 'forward')}"


def derive(record: dict) -> dict:
    """Adds per-clip time and achieved GFLOP/s (and its share of the worker's matmul peak)."""
    timing = record.get("timing") or {}
    median = timing.get("median_s")
    batch = int(record.get("spec", {}).get("batch", 1))
    if median:
        record["s_per_clip"] = median / batch
        flops = (record.get("flops") or {}).get("flops")
        if flops and record.get("spec", {}).get("mode", "forward") == "forward":
            record["achieved_gflops"] = flops / median / 1e9
            peak = (record.get("matmul_peak") or {}).get("gflops")
            if peak:
                record["fraction_of_own_matmul_peak"] = record["achieved_gflops"] / peak
    return record


def load_results(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {"records": {}, "runs": []}


def run_peaks(results: dict) -> dict:
    """Highest 2048² matmul GFLOP/s of each run (its NumPy peak and its workers' peaks), keyed
    by run index; key None: the whole file (for records older than run indices)."""
    peaks: dict = {}
    for index, run in enumerate(results["runs"]):
        peaks[index] = [run.get("numpy_matmul_peak", {}).get("gflops")]
    for r in results["records"].values():
        peaks.setdefault(r.get("run"), []).append((r.get("matmul_peak") or {}).get("gflops"))
    best = {run: max([p for p in values if p], default=None) for run, values in peaks.items()}
    best[None] = max([p for p in best.values() if p], default=None)
    return best


def finalise(results: dict) -> dict:
    """Matmul peaks, each record's share of its run's peak, ratios against the reference."""
    records = results["records"]
    peaks = run_peaks(results)
    results["matmul_peak_gflops_max"] = peaks[None]
    for r in records.values():
        peak = peaks.get(r.get("run")) or peaks[None]
        if r.get("achieved_gflops") and peak:
            r["run_matmul_peak_gflops"] = peak
            r["fraction_of_run_matmul_peak"] = r["achieved_gflops"] / peak
    for key, r in records.items():
        if r.get("backend") in (None, "torch-reference") or not r.get("s_per_clip"):
            continue
        config, batch, _, mode = key.split("|")
        ref = records.get(f"{config}|{batch}|torch-reference|{mode}")
        if ref and ref.get("s_per_clip"):
            r["time_vs_reference"] = time_ratio(r, ref)
    return results


def time_ratio(record: dict, reference: dict) -> float:
    """Ours / reference per clip: the median of the per-round ratios when both were measured
    in the same alternating rounds (a drifting machine speed cancels within a round), else
    the ratio of the medians."""
    ours, theirs = record.get("round_s_per_clip"), reference.get("round_s_per_clip")
    if ours and theirs and len(ours) == len(theirs) and record.get("run") == reference.get("run"):
        return median_ratio(ours, theirs)
    return record["s_per_clip"] / reference["s_per_clip"]


def merge_rounds(rounds: list[dict]) -> dict:
    """One record from the same job measured in several rounds: the median round's record,
    with every round's time per clip and their median."""
    if len(rounds) == 1:
        return rounds[0]
    timed = [r for r in rounds if r.get("s_per_clip")]
    if len(timed) < len(rounds):
        return next(r for r in rounds if not r.get("s_per_clip"))  # the failure or skip
    per_round = [r["s_per_clip"] for r in timed]
    merged = dict(sorted(timed, key=lambda r: r["s_per_clip"])[len(timed) // 2])
    merged["round_s_per_clip"] = per_round
    merged["s_per_clip"] = statistics.median(per_round)
    merged["max_rss_mb"] = max(r.get("max_rss_mb") or 0 for r in timed)
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=configs.FULL_SIZE,
                        help=f"names from benchmarks/configs.py: {', '.join(configs.MODELS)}")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS),
                        choices=(*BACKENDS, TF_NO_JIT))
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--mode", choices=("forward", "train"), default="forward")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls (compilation)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run each config's jobs (reference and backends) this many times, "
                             "alternating their order; ratios are medians of per-round ratios")
    parser.add_argument("--no-jit", action="store_true",
                        help=f"TensorFlow without XLA (same as --backends {TF_NO_JIT})")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--reference-only", action="store_true")
    parser.add_argument("--reference-dir", action="append", default=[],
                        help="directory holding the original checkouts (elb3k/vtn, "
                             "bomri/SlowFast, LAPS-transformer); repeatable")
    parser.add_argument("--reference-python", default=sys.executable,
                        help="interpreter with torch==2.13.0 (+ transformers, timm 0.4.12, "
                             "einops) for the references")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--max-load", type=float, default=None,
                        help="wait until the 1-min load average is below this before each run")
    parser.add_argument("--max-wait", type=float, default=0, help="seconds to wait for it")
    parser.add_argument("--timeout", type=float, default=1800, help="per worker, seconds")
    parser.add_argument("--frames", type=int, default=None,
                        help="override num_frames (e.g. a quick run on shorter clips)")
    parser.add_argument("--image-size", type=int, default=None, help="override image_size")
    parser.add_argument("--flops-only", action="store_true",
                        help="build and count FLOPs/params only (no timing, no reference)")
    parser.add_argument("--count-reference-flops", action="store_true",
                        help="also run torch's FlopCounterMode on the reference (one extra pass)")
    args = parser.parse_args(argv)
    unknown = [c for c in args.configs if c not in configs.MODELS]
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {list(configs.MODELS)}")

    if args.flops_only:
        args.no_reference, args.repeats, args.warmup = True, 0, 0
    overrides = {k: v for k, v in (("num_frames", args.frames),
                                     ("image_size", args.image_size)) if v}
    results = load_results(args.out)
    run = {**system_info(), "argv": sys.argv[1:] if argv is None else argv}
    run["numpy_matmul_peak"] = numpy_matmul_peak()
    results["runs"].append(run)
    print(f"load {load_average()}  numpy matmul peak {run['numpy_matmul_peak']['gflops']:.0f} "
          "GFLOP/s", flush=True)

    for name in args.configs:
        entry = configs.MODELS[name]
        for batch in args.batch:
            jobs = []
            if entry.get("reference") and not args.no_reference:
                spec = dict(reference=entry["reference"], config=name,
                            kwargs={**entry["kwargs"], **overrides}, overrides=overrides,
                            batch=batch, mode=args.mode, repeats=args.repeats,
                            warmup=args.warmup, dirs=args.reference_dir,
                            count_flops=args.count_reference_flops)
                jobs.append(("torch-reference", "benchmarks.reference", spec,
                             args.reference_python, {}))
            elif not args.no_reference:
                print(f"{name}: no runnable reference implementation (see benchmarks/README.md)")
            if not args.reference_only:
                for backend in args.backends:
                    if backend == "tensorflow" and args.no_jit:
                        backend = TF_NO_JIT
                    spec = dict(config=name, batch=batch, mode=args.mode, repeats=args.repeats,
                                warmup=args.warmup, jit=backend != TF_NO_JIT,
                                overrides=overrides)
                    if args.flops_only:
                        spec.update(matmul_peak=False, flops_only=True)
                    jobs.append((backend, "benchmarks.keras_worker", spec, sys.executable,
                                 {"KERAS_BACKEND": backend.split("-")[0]}))
            measured: dict[str, list[dict]] = {}
            for round_index in range(args.rounds):
                for label, module, spec, python, env in alternating(jobs, round_index):
                    load = wait_for_quiet(args.max_load, args.max_wait)
                    record = run_worker(module, spec, python=python, env=env,
                                        timeout=args.timeout)
                    record["backend"] = label
                    record.setdefault("spec", spec)
                    record["load_average_before"] = load
                    record["run"] = len(results["runs"]) - 1
                    derive(record)
                    key = record_key(record)
                    measured.setdefault(key, []).append(record)
                    # Saved after every job, so an interrupted run keeps what it measured.
                    results["records"][key] = merge_rounds(measured[key])
                    save_json(args.out, finalise(results))
                    suffix = f" (round {round_index + 1}/{args.rounds})" if args.rounds > 1 else ""
                    print(one_line(key, record) + suffix, flush=True)

    from benchmarks.report import models_table

    print(models_table(finalise(results)))
    save_json(args.out, results)
    return 0


def one_line(key: str, r: dict) -> str:
    if r.get("skipped"):
        return f"{key}: SKIPPED {r['skipped']}"
    if r.get("error"):
        return f"{key}: ERROR {r['error']}: {r.get('tail', '')[-800:]}"
    if not r.get("s_per_clip"):
        gmacs = (r.get("flops") or {}).get("gmacs")
        return f"{key}: {gmacs} GMACs, {r.get('params')} params (not timed)"
    extra = ""
    if r.get("achieved_gflops"):
        extra = f" {r['achieved_gflops']:.0f} GFLOP/s"
    return (f"{key}: {r['s_per_clip']:.3f} s/clip (median of {len(r['timing']['times_s'])}), "
            f"peak RSS {r['max_rss_mb']:.0f} MiB{extra}, load {r.get('load_average_end')}")


if __name__ == "__main__":
    sys.exit(main())
