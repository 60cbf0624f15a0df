"""LAPS cost over its plain per-frame 2D backbone: measured time vs counted FLOPs.

For each backbone the LAPS model and the same backbone without leap attention and shift
(`leap_levels=None, fold_div=0`, the repo's "base2d" ablation) run alternately for several
rounds, which of the two goes first alternating (so load changes hit both alike); the
overhead is the median over rounds of their time ratio minus one, compared with the FLOP
overhead from the analytic counter and with the paper's fvcore numbers (+4.07% ViT-B/16,
+2.72% Visformer-S at 8×224). Target: measured overhead ≤ FLOP overhead + 2 points.

    python -m benchmarks.laps_overhead --backbones visformer_small vit_base --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from benchmarks.harness import (
    alternating,
    load_average,
    median_ratio,
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
    parser.add_argument("--rounds", type=int, default=3, help="alternating LAPS/2D runs")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--max-load", type=float, default=None)
    parser.add_argument("--max-wait", type=float, default=0)
    parser.add_argument("--reference-dir", action="append", default=[],
                        help="LAPS-transformer checkout: also measure the original's overhead")
    parser.add_argument("--reference-python", default=sys.executable)
    args = parser.parse_args(argv)
    results = {**system_info(), "batch": args.batch, "rows": []}
    from benchmarks.configs import MODELS

    for backbone in args.backbones:
        laps, plain, paper = PAIRS[backbone]
        runners = [(b, "benchmarks.keras_worker", sys.executable, {"KERAS_BACKEND": b})
                   for b in args.backends]
        if args.reference_dir:
            runners.append(("torch-reference", "benchmarks.reference", args.reference_python,
                            {}))
        for backend, module, python, env in runners:
            times: dict[str, list[float]] = {laps: [], plain: []}
            round_medians: dict[str, list[float | None]] = {laps: [], plain: []}
            flops: dict[str, float] = {}
            loads = []
            for round_index in range(args.rounds):
                for config in alternating((laps, plain), round_index):
                    round_medians[config].append(None)
                    spec = dict(config=config, batch=args.batch, repeats=args.repeats,
                                warmup=1, matmul_peak=False)
                    if module == "benchmarks.reference":
                        spec.update(reference=MODELS[config]["reference"],
                                    kwargs=MODELS[config]["kwargs"], dirs=args.reference_dir)
                    loads.append(wait_for_quiet(args.max_load, args.max_wait))
                    r = run_worker(module, spec, python=python, env=env)
                    if r.get("error") or r.get("skipped"):
                        print(f"{config} [{backend}]: {r.get('error') or r.get('skipped')}"
                              f" {r.get('tail', '')[-600:]}", flush=True)
                        continue
                    times[config] += r["timing"]["times_s"]
                    round_medians[config][-1] = r["timing"]["median_s"]
                    if r.get("flops"):
                        flops[config] = r["flops"]["macs"]
                    print(f"{config} [{backend}] median {r['timing']['median_s']:.3f} s "
                          f"load {load_average()}", flush=True)
            if not (times[laps] and times[plain]):
                continue
            row = {
                "backbone": backbone, "backend": backend, "batch": args.batch,
                "laps_median_s": statistics.median(times[laps]),
                "plain2d_median_s": statistics.median(times[plain]),
                "laps_times_s": times[laps], "plain2d_times_s": times[plain],
                "paper_fvcore_flop_overhead": paper, "load_averages": loads,
            }
            row["laps_round_medians_s"] = round_medians[laps]
            row["plain2d_round_medians_s"] = round_medians[plain]
            row["measured_overhead"] = paired_overhead(round_medians[laps], round_medians[plain])
            if laps in flops and plain in flops:
                row["counted_flop_overhead"] = flops[laps] / flops[plain] - 1
                row["laps_gmacs"] = flops[laps] / 1e9
                row["plain2d_gmacs"] = flops[plain] / 1e9
            flop_overhead = row.get("counted_flop_overhead", paper)
            row["target_met"] = row["measured_overhead"] <= flop_overhead + 0.02
            results["rows"].append(row)
            save_json(args.out, results)
            print(f"{backbone} [{backend}]: measured {100 * row['measured_overhead']:+.1f}% vs "
                  f"FLOPs {100 * flop_overhead:+.2f}% (paper {100 * paper:+.2f}%)", flush=True)
    results["load_average_end"] = load_average()
    save_json(args.out, results)
    return 0


def paired_overhead(laps_rounds: list, plain_rounds: list) -> float:
    """Median over rounds of LAPS / plain time − 1 (rounds where both ran)."""
    return median_ratio(laps_rounds, plain_rounds) - 1


if __name__ == "__main__":
    sys.exit(main())
