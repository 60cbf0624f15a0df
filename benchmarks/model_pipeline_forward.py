"""Forward time of one configuration per family, before and after a change to how models are
built (the graph should be the same, so the time too).

Each measurement is a fresh process that imports `keras_vtn` from one source tree (PYTHONPATH),
builds the model, and times `predict_on_batch` on TensorFlow. Trees and families alternate
within each round (the order reversed every other round), so a drifting machine speed favours
neither tree. The result file holds every timing, the per-family medians and the after/before
ratio of medians.

    git worktree add /tmp/before <commit>   # the tree to compare with (not committed)
    python benchmarks/model_pipeline_forward.py --before /tmp/before --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).absolute().parents[1]
RESULT_PREFIX = "BENCH_RESULT "
OUTPUT = ROOT / "benchmarks" / "results" / "model_pipeline_forward.json"

# Small versions of each family (the demo's widths) on 8 frames of 64×64, batch 2.
CLIP = dict(num_frames=8, image_size=64)
CONFIGS: dict[str, tuple[str, dict]] = {
    "vivit": ("ViViT", dict(variant="factorised_encoder", tubelet_size=(2, 8, 8), hidden_dim=64,
                            num_heads=4, mlp_dim=128, num_spatial_layers=2, num_temporal_layers=2)),
    "linear_vtn": ("LinearVTN", dict(patch_size=8, hidden_dim=64, num_spatial_layers=2,
                                     num_spatial_heads=4, spatial_mlp_dim=128,
                                     num_temporal_layers=2, num_temporal_heads=4,
                                     temporal_head_dim=16, temporal_mlp_dim=128, linformer_k=4)),
    "vtn": ("VTN", dict(patch_size=8, hidden_dim=64, num_spatial_layers=2, num_spatial_heads=4,
                        spatial_mlp_dim=128, num_temporal_layers=2, num_temporal_heads=4,
                        temporal_mlp_dim=128, attention_window=8, head_hidden_dim=64)),
    "laps": ("LAPSTransformer", dict(backbone="vit_base", patch_size=8, hidden_dim=64,
                                     num_layers=4, num_heads=4, mlp_dim=128)),
}


def worker(spec: dict) -> dict:
    """Runs in the child: builds `spec`'s model from the tree on PYTHONPATH and times it."""
    import numpy as np

    import keras_vtn

    tree = os.path.realpath(spec["tree"])
    if not os.path.realpath(keras_vtn.__file__).startswith(tree + os.sep):
        raise RuntimeError(f"keras_vtn came from {keras_vtn.__file__}, not from {tree}")
    builder, kwargs = CONFIGS[spec["family"]]
    model = getattr(keras_vtn, builder)(**kwargs, **CLIP, num_classes=10)
    clip = np.random.default_rng(0).uniform(0, 255, (2, 8, 64, 64, 3)).astype("float32")
    for _ in range(spec["warmup"]):
        model.predict_on_batch(clip)
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        model.predict_on_batch(clip)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "times_s": times,
            "parameters": int(model.count_params())}


def summarise(runs: list[dict], family: str) -> dict:
    """Per tree: the median over processes of each process's median and fastest call (the
    fastest is the least disturbed by other work on a shared machine), and after/before."""
    out = {}
    for stat, pick in (("median", statistics.median), ("fastest", min)):
        values = {tree: statistics.median(pick(r["times_s"]) for r in runs
                                          if r["family"] == family and r["tree"] == tree)
                  for tree in ("before", "after")}
        out.update({f"before_{stat}_ms": round(values["before"] * 1e3, 2),
                    f"after_{stat}_ms": round(values["after"] * 1e3, 2),
                    f"{stat}_after_over_before": round(values["after"] / values["before"], 3)})
    return out


def run_one(tree: str, family: str, repeats: int, warmup: int) -> dict:
    spec = {"tree": tree, "family": family, "repeats": repeats, "warmup": warmup}
    env = dict(os.environ, PYTHONPATH=tree, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=900, cwd=tree)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return {"error": f"exit {proc.returncode}", "tail": (proc.stdout + proc.stderr)[-2000:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="source tree of the earlier version (required)")
    parser.add_argument("--after", default=str(ROOT), help="source tree of the later version")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--families", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--output", default=str(OUTPUT))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(RESULT_PREFIX + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    if not args.before:
        parser.error("--before is required")
    trees = {"before": os.path.realpath(args.before), "after": os.path.realpath(args.after)}
    jobs = [(family, label) for family in args.families for label in trees]
    runs: list[dict] = []
    for round_index in range(args.rounds):
        for family, label in (jobs[::-1] if round_index % 2 else jobs):
            result = run_one(trees[label], family, args.repeats, args.warmup)
            result.update(round=round_index, family=family, tree=label,
                          load_average=[round(x, 2) for x in os.getloadavg()])
            runs.append(result)
            if "error" in result:
                raise SystemExit(f"{family} ({label}) failed: {result['error']}\n{result['tail']}")
            print(f"round {round_index} {family:<10s} {label:<6s} "
                  f"{result.get('median_s', float('nan')) * 1e3:8.1f} ms", flush=True)
    summary = {family: summarise(runs, family) for family in args.families}
    payload = {"what": "TensorFlow forward time (predict_on_batch, batch 2, 8x64x64), fresh "
                       "process per measurement, trees alternating within each round",
               "configs": {f: {"builder": CONFIGS[f][0], "kwargs": CONFIGS[f][1], **CLIP}
                           for f in args.families},
               "trees": trees, "rounds": args.rounds, "repeats": args.repeats,
               "system": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
               "summary": summary, "runs": runs}
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
