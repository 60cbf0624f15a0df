"""`keras-vtn benchmark`: times a model's forward pass on random clips (inference throughput).

A thin timer; the repository's `benchmarks/` folder holds the full FLOPs, memory and
per-backend tables (`python -m benchmarks.models`).

examples:
  keras-vtn benchmark --family vivit --num-frames 8 --image-size 64
  keras-vtn benchmark --model runs/vivit/model.keras --batch-size 4
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def benchmark_forward(model, batch_size: int = 1, warmup: int = 2, iterations: int = 5,
                      seed: int = 0) -> dict:
    """Median seconds per forward of `batch_size` random uint8-range clips, after `warmup`."""
    import keras

    from keras_vtn.models.families import model_clip_shape, takes_frame_indices

    frames, height, width = model_clip_shape(model)
    if None in (frames, height, width):
        raise ValueError("The model's input has no fixed (frames, height, width); build it with "
                         "num_frames and image_size.")
    rng = np.random.default_rng(seed)
    clips = rng.integers(0, 256, (batch_size, frames, height, width, 3)).astype("float32")
    inputs = clips
    if takes_frame_indices(model):
        inputs = {"frames": clips,
                  "frame_indices": np.tile(np.arange(frames, dtype="int32"), (batch_size, 1))}
    times = []
    for i in range(warmup + iterations):
        start = time.perf_counter()
        out = model.predict_on_batch(inputs)
        np.asarray(out)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {
        "model": model.name,
        "backend": keras.backend.backend(),
        "input": [batch_size, frames, height, width, 3],
        "parameters": int(model.count_params()),
        "seconds_per_batch": round(median, 5),
        "clips_per_second": round(batch_size / median, 3),
        "iterations": iterations,
    }


def add_parser(subparsers) -> None:
    from keras_vtn.evaluation import add_model_arguments

    parser = subparsers.add_parser(
        "benchmark", help="time a model's forward pass on random clips",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument("--num-frames", type=int, default=8, help="for --family models")
    parser.add_argument("--image-size", type=int, default=224, help="for --family models")
    parser.add_argument("--num-classes", type=int, default=400, help="for --family models")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--precision", default="float32",
                        choices=["float32", "mixed_float16", "mixed_bfloat16"])
    parser.set_defaults(func=run_benchmark)


def run_benchmark(args) -> int:
    import keras

    from keras_vtn.evaluation import model_from_args

    keras.config.set_dtype_policy(args.precision)
    model = model_from_args(args, num_frames=args.num_frames, image_size=args.image_size,
                            num_classes=args.num_classes)
    result = benchmark_forward(model, args.batch_size, args.warmup, args.iterations)
    result["precision"] = args.precision
    print(json.dumps(result, indent=2))
    return 0
