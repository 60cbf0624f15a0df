"""Markdown tables from the results JSON files: `python -m benchmarks.report [models.json]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _fmt(value, spec: str = ".2f", missing: str = "–") -> str:
    return missing if value is None else format(value, spec)


def models_table(results: dict) -> str:
    """One row per (config, batch, backend, mode) record with a timing."""
    lines = [
        "| config | batch | backend | mode | s/clip | vs ref | GMACs/clip | GFLOP/s "
        "| % matmul peak | run peak GFLOP/s | peak RSS MiB | load (1/5/15 min) | reps | rounds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(results.get("records", {})):
        r = results["records"][key]
        config, batch, backend, mode = key.split("|")
        if r.get("skipped") or r.get("error"):
            reason = r.get("skipped") or r.get("error")
            lines.append(f"| {config} | {batch[1:]} | {backend} | {mode} | {reason} |"
                         + " |" * 9)
            continue
        gmacs = (r.get("flops") or {}).get("gmacs")
        b = int(batch[1:])
        if not r.get("timing"):
            lines.append(f"| {config} | {b} | {backend} | {mode} | not timed | – "
                         f"| {_fmt(gmacs and gmacs / b, '.1f')} |" + " |" * 7)
            continue
        frac = r.get("fraction_of_run_matmul_peak")
        load = r.get("load_average_start") or r.get("load_average_before")
        lines.append(
            f"| {config} | {b} | {backend} | {mode} | {_fmt(r.get('s_per_clip'), '.3f')} "
            f"| {_fmt(r.get('time_vs_reference'))} | {_fmt(gmacs and gmacs / b, '.1f')} "
            f"| {_fmt(r.get('achieved_gflops'), '.0f')} | {_fmt(frac and 100 * frac, '.0f')} "
            f"| {_fmt(r.get('run_matmul_peak_gflops'), '.0f')} "
            f"| {_fmt(r.get('max_rss_mb'), '.0f')} | {'/'.join(map(str, load or []))} "
            f"| {len((r.get('timing') or {}).get('times_s', []))} "
            f"| {len(r.get('round_s_per_clip') or [r])} |"
        )
    peak = results.get("matmul_peak_gflops_max")
    lines.append("")
    lines.append("% matmul peak: achieved GFLOP/s over the run peak, the fastest 2048² fp32 "
                 "matmul measured in the record's run (records from before runs were "
                 f"numbered use the file's fastest, {_fmt(peak, '.0f')} GFLOP/s).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0] if argv else "benchmarks/results/models.json")
    print(models_table(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
