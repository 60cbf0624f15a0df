"""Model FLOPs utilisation on a GPU in bfloat16, for KERAS_BACKEND=jax or torch.

(The GPU machine has no TensorFlow.) Builds the model under the `mixed_bfloat16` policy,
times `train_on_batch` (JAX: jitted; PyTorch: eager) and the inference forward, and reports

    MFU = model FLOPs per step / step time / peak bf16 FLOP/s

with model FLOPs from the analytic counter (training = 3 × forward: the backward pass costs
two forwards, the usual MFU convention; no credit for recomputation). The dense bf16 peak is
taken from `--peak-tflops`, or from the device name for known parts (H100/H200 SXM 989,
A100 312), and a large bf16 matmul is timed on the device as a measured reference point.

    KERAS_BACKEND=jax python -m benchmarks.gpu_mfu --configs vivit_b_spatio_temporal --batch 8

Without a GPU it still runs (for testing the script on a tiny config) and says so.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from benchmarks.harness import save_json, system_info, time_calls

KNOWN_PEAKS_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L4": 121.0}
DEFAULT_OUT = Path("benchmarks/results/gpu_mfu.json")


def device_info() -> dict:
    """Backend, device kind and whether it is a GPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return {"backend": backend, "platform": device.platform, "device": device.device_kind}
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return {"backend": backend, "platform": "gpu",
                    "device": torch.cuda.get_device_name(0)}
        return {"backend": backend, "platform": "cpu", "device": "cpu"}
    raise SystemExit(f"gpu_mfu runs on KERAS_BACKEND=jax or torch, not {backend!r}.")


def bf16_matmul_tflops(n: int, repeats: int = 10) -> dict:
    """Measured TFLOP/s of an n×n bf16 matmul on the default device."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        a = jnp.ones((n, n), jnp.bfloat16)
        fn = jax.jit(jnp.matmul)
        call = lambda: fn(a, a).block_until_ready()  # noqa: E731
    else:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        a = torch.ones((n, n), dtype=torch.bfloat16, device=device)

        def call():
            torch.mm(a, a)
            if device == "cuda":
                torch.cuda.synchronize()

    timing = time_calls(call, repeats, warmup=3)
    return {"n": n, "tflops": 2 * n**3 / timing["median_s"] / 1e12, **timing}


def peak_for(device: str, given: float | None) -> float | None:
    if given:
        return given
    for key, value in KNOWN_PEAKS_TFLOPS.items():
        if key in device:
            return value
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["vivit_b_spatio_temporal"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--modes", nargs="+", default=["train", "forward"],
                        choices=("train", "forward"))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype-policy", default="mixed_bfloat16")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of the device (default: known parts)")
    parser.add_argument("--matmul-n", type=int, default=8192)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    from benchmarks.keras_worker import main as measure

    info = device_info()
    if info["platform"] != "gpu":
        print(f"No GPU found ({info}): running on CPU; the MFU figures are not GPU results.")
    peak = peak_for(info["device"], args.peak_tflops)
    results = {**system_info(), **info, "dtype_policy": args.dtype_policy,
               "peak_tflops_assumed": peak, "rows": []}
    results["bf16_matmul"] = bf16_matmul_tflops(args.matmul_n)
    for config in args.configs:
        for mode in args.modes:
            t0 = time.perf_counter()
            r = measure(dict(config=config, batch=args.batch, mode=mode, repeats=args.repeats,
                             warmup=args.warmup, matmul_peak=False,
                             dtype_policy=args.dtype_policy))
            step = r["timing"]["median_s"]
            flops = r["flops"]["flops"] * (3 if mode == "train" else 1)
            row = {"config": config, "mode": mode, "batch": args.batch, "step_s": step,
                   "times_s": r["timing"]["times_s"], "model_tflop_per_step": flops / 1e12,
                   "achieved_tflops": flops / step / 1e12, "params": r["params"],
                   "wall_s": time.perf_counter() - t0}
            if peak:
                row["mfu"] = row["achieved_tflops"] / peak
            row["fraction_of_measured_bf16_matmul"] = (
                row["achieved_tflops"] / results["bf16_matmul"]["tflops"])
            results["rows"].append(row)
            save_json(args.out, results)
            mfu = f"{100 * row['mfu']:.1f}%" if peak else "n/a (no peak)"
            print(f"{config} {mode} b{args.batch} [{info['backend']} {info['device']}]: "
                  f"{step:.4f} s/step, {row['achieved_tflops']:.2f} TFLOP/s, MFU {mfu}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
