"""LAPS cost over its plain per-frame 2D backbone: measured time vs counted FLOPs.

For each backbone the LAPS model and the same backbone without leap attention and shift
(`leap_levels=None, fold_div=0`, the repo's "base2d" ablation) are built in one worker
process and called alternately (LAPS, 2D, 2D, LAPS, ...), so each LAPS call has a 2D call
next to it at the same machine speed; the speed drifts by tens of percent within minutes
here, which separate processes per model cannot pair away. The overhead is the median of
the per-pair time ratios minus one, with a 90% bootstrap interval, pooled over `--rounds`
worker processes (which model is built first alternates). It is compared with the FLOP
overhead from the analytic counter and with the paper's fvcore numbers (+4.07% ViT-B/16,
+2.72% Visformer-S at 8×224). Target: measured overhead ≤ FLOP overhead + 2 points.

    python -m benchmarks.laps_overhead --backbones visformer_small vit_base --rounds 2 --calls 15
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from benchmarks.harness import (
    alternating,
    load_average,
    median_interval,
    run_worker,
    save_json,
    system_info,
    wait_for_quiet,
)

PAIRS = {
    "vit_base": ("laps_vit_b_8", "laps_vit_b_8_plain2d", 0.0407),
    "visformer_small": ("laps_visformer_s_8", "laps_visformer_s_8_plain2d", 0.0272),
}
DEFAULT_OUT = Path("benchmarks/results/laps_overhead.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--backends", nargs="+", default=["tensorflow"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2,
                        help="worker processes per backend, which model is built first alternating")
    parser.add_argument("--calls", type=int, default=15,
                        help="alternating LAPS/2D call pairs per worker process")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--max-load", type=float, default=None)
    parser.add_argument("--max-wait", type=float, default=0)
    parser.add_argument("--reference-dir", action="append", default=[],
                        help="LAPS-transformer checkout: also measure the original's overhead")
    parser.add_argument("--reference-python", default=sys.executable)
    args = parser.parse_args(argv)
    results = {**system_info(), "batch": args.batch, "rows": []}
    from benchmarks.configs import MODELS

    def spec_of(config: str, reference: bool) -> dict:
        spec = dict(config=config)
        if reference:
            spec.update(reference=MODELS[config]["reference"], kwargs=MODELS[config]["kwargs"])
        return spec

    for backbone in args.backbones:
        laps, plain, paper = PAIRS[backbone]
        runners = [(b, "benchmarks.keras_worker", sys.executable, {"KERAS_BACKEND": b})
                   for b in args.backends]
        if args.reference_dir:
            runners.append(("torch-reference", "benchmarks.reference", args.reference_python,
                            {}))
        for backend, module, python, env in runners:
            reference = module == "benchmarks.reference"
            times: dict[str, list[float]] = {laps: [], plain: []}
            flops: dict[str, float] = {}
            loads = []
            for round_index in range(args.rounds):
                first, second = alternating((laps, plain), round_index)
                spec = dict(spec_of(first, reference), paired_with=spec_of(second, reference),
                            batch=args.batch, repeats=args.calls, warmup=1, matmul_peak=False)
                if reference:
                    spec["dirs"] = args.reference_dir
                loads.append(wait_for_quiet(args.max_load, args.max_wait))
                r = run_worker(module, spec, python=python, env=env)
                if r.get("error") or r.get("skipped"):
                    print(f"{backbone} [{backend}]: {r.get('error') or r.get('skipped')}"
                          f" {r.get('tail', '')[-600:]}", flush=True)
                    continue
                for config, info in ((first, r), (second, r["paired_info"])):
                    times[config] += r["paired_timing"][config]["times_s"]
                    if info.get("flops"):
                        flops[config] = info["flops"]["macs"]
                print(f"{backbone} [{backend}] round {round_index + 1}: LAPS "
                      f"{r['paired_timing'][laps]['median_s']:.3f} s, plain 2D "
                      f"{r['paired_timing'][plain]['median_s']:.3f} s, load {load_average()}",
                      flush=True)
            if not times[laps]:
                continue
            ratios = [a / b for a, b in zip(times[laps], times[plain], strict=True)]
            low, high = median_interval(ratios)
            row = {
                "backbone": backbone, "backend": backend, "batch": args.batch,
                "laps_median_s": statistics.median(times[laps]),
                "plain2d_median_s": statistics.median(times[plain]),
                "laps_times_s": times[laps], "plain2d_times_s": times[plain],
                "pairs": len(ratios), "measured_overhead": paired_overhead(ratios),
                "overhead_interval_90": [low - 1, high - 1],
                "paper_fvcore_flop_overhead": paper, "load_averages": loads,
            }
            if laps in flops and plain in flops:
                row["counted_flop_overhead"] = flops[laps] / flops[plain] - 1
                row["laps_gmacs"] = flops[laps] / 1e9
                row["plain2d_gmacs"] = flops[plain] / 1e9
            row["target"] = row.get("counted_flop_overhead", paper) + 0.02
            row["target_met"] = row["measured_overhead"] <= row["target"]
            results["rows"].append(row)
            save_json(args.out, results)
            print(f"{backbone} [{backend}]: measured {100 * row['measured_overhead']:+.1f}% "
                  f"(90% interval {100 * (low - 1):+.1f}..{100 * (high - 1):+.1f}%, "
                  f"{len(ratios)} pairs) vs target {100 * row['target']:+.2f}% "
                  f"(paper FLOPs {100 * paper:+.2f}%)", flush=True)
    results["load_average_end"] = load_average()
    save_json(args.out, results)
    return 0


def paired_overhead(ratios: list[float]) -> float:
    """Median of the per-pair LAPS / plain time ratios, minus one."""
    return statistics.median(ratios) - 1


if __name__ == "__main__":
    sys.exit(main())
