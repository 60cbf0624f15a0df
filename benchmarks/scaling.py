"""Forward time and peak memory against the number of frames, for every family.

Reduced-width models (ViT-Tiny-like width 192, 3 heads, 4 spatial layers, 112² frames) keep
the 256-frame points within a CPU's reach while keeping each family's structure: ViViT joint
attention is quadratic in the token count (frames/2 × 49 tokens), the frame-wise families
(ViViT factorised encoder, LinearVTN, VTN, LAPS) are linear in frames. The log-log slope
between the two longest clips is reported (≈1 linear, ≈2 quadratic) with a PNG plot.
Model 4 splits its heads between time and space, so it uses 4 heads (of width 48).

    python -m benchmarks.scaling --frames 8 16 32 64 128 256 --backends tensorflow
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from benchmarks.harness import load_average, run_worker, save_json, system_info, wait_for_quiet

_VIT = dict(image_size=112, hidden_dim=192, num_heads=3, mlp_dim=768)
_SPATIAL = dict(image_size=112, patch_size=16, hidden_dim=192, num_spatial_layers=4,
                num_spatial_heads=3, spatial_mlp_dim=768)
FAMILIES: dict[str, tuple[str, dict]] = {
    "ViViT spatio-temporal (Model 1)": (
        "ViViT", dict(variant="spatio_temporal", num_layers=4, **_VIT)),
    "ViViT factorised encoder (Model 2)": (
        "ViViT", dict(variant="factorised_encoder", num_spatial_layers=4,
                      num_temporal_layers=2, **_VIT)),
    "ViViT factorised self-attention (Model 3)": (
        "ViViT", dict(variant="factorised_self_attention", num_layers=4, **_VIT)),
    "ViViT factorised dot-product (Model 4)": (
        "ViViT", dict(variant="factorised_dot_product", num_layers=4, **dict(_VIT, num_heads=4))),
    "LinearVTN": (
        "LinearVTN", dict(num_temporal_layers=2, num_temporal_heads=3, temporal_head_dim=64,
                          temporal_mlp_dim=768, **_SPATIAL)),
    "VTN": (
        "VTN", dict(num_temporal_layers=2, num_temporal_heads=3, temporal_mlp_dim=768,
                    max_position_embeddings=288, **_SPATIAL)),
    "LAPS ViT": (
        "LAPSTransformer", dict(backbone="vit_base", patch_size=16, num_layers=4, **_VIT)),
}
DEFAULT_OUT = Path("benchmarks/results/scaling.json")


def slope(points: list[tuple[int, float]]) -> float | None:
    """Log-log slope between the two largest frame counts."""
    points = sorted(p for p in points if p[1])
    if len(points) < 2:
        return None
    (f0, t0), (f1, t1) = points[-2], points[-1]
    return math.log(t1 / t0) / math.log(f1 / f0)


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5))
    for family, series in results["series"].items():
        for backend, points in series.items():
            ok = [p for p in points if p.get("s_per_clip")]
            if not ok:
                continue
            frames = [p["frames"] for p in ok]
            fit = slope([(p["frames"], p["s_per_clip"]) for p in ok])
            label = f"{family} [{backend}]" + (f" slope {fit:.2f}" if fit else "")
            ax_t.plot(frames, [p["s_per_clip"] for p in ok], "o-", label=label)
            ax_m.plot(frames, [p["forward_mem_mb"] for p in ok], "o-", label=family)
    for ax, ylabel in ((ax_t, "forward time per clip (s)"),
                       (ax_m, "peak RSS − RSS after build (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("frames")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    load = results.get("load_average")
    fig.suptitle(f"Scaling with clip length (reduced width: D=192, 4 layers, 112²); "
                 f"load at start {load}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", nargs="+", type=int, default=[8, 16, 32, 64, 128, 256])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES),
                        help=f"any of {list(FAMILIES)}")
    parser.add_argument("--backends", nargs="+", default=["tensorflow"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--max-load", type=float, default=None)
    parser.add_argument("--max-wait", type=float, default=0)
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--width", type=int, default=None, help="override hidden_dim")
    args = parser.parse_args(argv)
    results = {**system_info(), "frames": args.frames, "series": {}, "slopes": {},
               "configs": {f: FAMILIES[f] for f in args.families}}
    for family in args.families:
        builder, kwargs = FAMILIES[family]
        results["series"][family] = {}
        results["slopes"][family] = {}
        for backend in args.backends:
            points = []
            for frames in args.frames:
                overrides = dict(kwargs, num_frames=frames)
                if args.width:
                    overrides["hidden_dim"] = args.width
                spec = dict(builder=builder, kwargs=overrides, batch=1, repeats=args.repeats,
                            warmup=args.warmup, matmul_peak=False, label=family)
                load = wait_for_quiet(args.max_load, args.max_wait)
                r = run_worker("benchmarks.keras_worker", spec, env={"KERAS_BACKEND": backend},
                               timeout=args.timeout)
                point = {"frames": frames, "load_average_before": load}
                if r.get("error"):
                    point["error"] = r["error"]
                    point["tail"] = r.get("tail", "")[-600:]
                    print(f"{family} [{backend}] {frames}: ERROR {r['error']}", flush=True)
                else:
                    timing = r["timing"]
                    point.update(
                        s_per_clip=timing["median_s"], times_s=timing["times_s"],
                        max_rss_mb=r["max_rss_mb"], rss_after_build_mb=r["rss_after_build_mb"],
                        forward_mem_mb=max(r["max_rss_mb"] - r["rss_after_build_mb"], 1.0),
                        gmacs=(r.get("flops") or {}).get("gmacs"), params=r["params"],
                        load_average_end=r.get("load_average_end"),
                    )
                    print(f"{family} [{backend}] {frames} frames: {timing['median_s']:.3f} s, "
                          f"{point['gmacs']:.1f} GMACs, peak {r['max_rss_mb']:.0f} MiB, "
                          f"load {load_average()}", flush=True)
                points.append(point)
                results["series"][family][backend] = points
                save_json(args.out, results)
            pairs = [(p["frames"], p.get("s_per_clip")) for p in points]
            results["slopes"][family][backend] = slope(pairs)
            macs = [(p["frames"], p.get("gmacs")) for p in points]
            results["slopes"][family][backend + "_gmacs"] = slope(macs)
            save_json(args.out, results)
    results["load_average_end"] = load_average()
    save_json(args.out, results)
    print("PNG:", plot(results, args.out.with_suffix(".png")))
    for family, slopes in results["slopes"].items():
        print(family, {k: (round(v, 2) if v else v) for k, v in slopes.items()})
    return 0


def replot(path: Path = DEFAULT_OUT) -> Path:
    """Redraws the PNG from a (possibly partial) results file."""
    import json

    return plot(json.loads(Path(path).read_text()), Path(path).with_suffix(".png"))


if __name__ == "__main__":
    sys.exit(main())
