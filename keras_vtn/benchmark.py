"""Times a model's forward pass on random clips (inference throughput): `benchmark_forward`.

A thin timer behind `keras-vtn benchmark` (`keras_vtn.cli.benchmark`); the repository's
`benchmarks/` folder holds the full FLOPs, memory and per-backend tables
(`python -m benchmarks.models`).
"""

from __future__ import annotations

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
