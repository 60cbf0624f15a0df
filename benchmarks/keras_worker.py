"""Worker process: builds one keras_vtn model on the backend in KERAS_BACKEND and measures it.

Usage (the scripts call it for you): `python -m benchmarks.keras_worker '<json spec>'` with
spec keys: `config` (a name in benchmarks.configs.MODELS) or `builder` + `kwargs`; `batch`;
`mode` ("forward" or "train"); `repeats`; `warmup`; `jit` (TensorFlow: XLA jit_compile;
JAX is always jitted; PyTorch runs eagerly); `overrides` (extra builder kwargs); `count_flops`;
`matmul_peak` (measure this backend's 2048² fp32 matmul in the same process); `dtype_policy`;
`paired_with` (spec keys of a second model, e.g. `{"config": ...}`, built in the same process;
the two run alternately, `repeats` calls each, and the result has `paired_timing` per config
instead of `timing`).
"""

from __future__ import annotations

import json
import os
import sys
import time

from benchmarks.harness import emit, load_average, rss_mb, time_calls, time_spec


def get_builder(name: str):
    """A builder by its public name (`"ViViT"`, ...) or a family name (`"vivit"`, ...)."""
    import keras_vtn
    from keras_vtn.models.families import FAMILIES

    if name in FAMILIES:
        return FAMILIES[name].builder
    builders = {family.builder.__name__: family.builder for family in FAMILIES.values()}
    if name in builders:
        return builders[name]
    return getattr(keras_vtn, name)


def resolve_spec(spec: dict) -> tuple[str, dict, tuple]:
    """(builder name, kwargs, input shape) from a spec."""
    from benchmarks.configs import MODELS

    if "config" in spec:
        entry = MODELS[spec["config"]]
        builder, kwargs = entry["builder"], dict(entry["kwargs"])
    else:
        builder, kwargs = spec["builder"], dict(spec["kwargs"])
    kwargs.update(spec.get("overrides") or {})
    size = kwargs.get("image_size", 224)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    shape = (int(spec.get("batch", 1)), kwargs.get("num_frames", 8), height, width, 3)
    return builder, kwargs, shape


def backend_matmul_peak(n: int = 2048, repeats: int = 10) -> dict:
    """GFLOP/s of a compiled fp32 n×n matmul on the current Keras backend."""
    import keras
    import numpy as np

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((n, n), dtype=np.float32)
    b_np = rng.standard_normal((n, n), dtype=np.float32)
    if backend == "tensorflow":
        import tensorflow as tf

        a, b = tf.constant(a_np), tf.constant(b_np)
        fn = tf.function(tf.matmul)
        call = lambda: fn(a, b).numpy()  # noqa: E731
    elif backend == "jax":
        import jax

        a, b = jax.numpy.asarray(a_np), jax.numpy.asarray(b_np)
        fn = jax.jit(jax.numpy.matmul)
        call = lambda: fn(a, b).block_until_ready()  # noqa: E731
    else:
        import torch

        a, b = torch.from_numpy(a_np), torch.from_numpy(b_np)
        call = lambda: torch.mm(a, b)  # noqa: E731
    timing = time_calls(call, repeats, warmup=2)
    return {"library": backend, "n": n, "gflops": 2 * n**3 / timing["median_s"] / 1e9, **timing}


def make_forward(model, x, jit: bool):
    """A blocking zero-argument callable running one inference forward pass."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        fn = tf.function(lambda inp: model(inp, training=False), jit_compile=jit)
        return lambda: fn(x).numpy()
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def fn(tv, ntv, inp):
            return model.stateless_call(tv, ntv, inp, training=False)[0]

        x = jax.numpy.asarray(x)
        return lambda: fn(trainable, non_trainable, x).block_until_ready()
    import torch

    x = keras.ops.convert_to_tensor(x)  # on the backend's device (a GPU when there is one)

    def run():
        with torch.inference_mode():
            return model(x, training=False).cpu().numpy()

    return run


def make_train_step(model, x, num_classes: int, jit: bool):
    """A blocking callable running one SGD training step (forward, backward, update)."""
    import keras
    import numpy as np

    model.compile(
        optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit if keras.backend.backend() == "tensorflow" else "auto",
    )
    y = np.arange(x.shape[0]) % num_classes
    return lambda: model.train_on_batch(x, y)


def prepare(spec: dict) -> tuple[dict, object]:
    """Builds the spec's model: (facts about it, a blocking call of one step or None)."""
    import numpy as np

    builder_name, kwargs, shape = resolve_spec(spec)
    info: dict = dict(builder=builder_name, kwargs=kwargs, input_shape=shape)
    t0 = time.perf_counter()
    model = get_builder(builder_name)(weights=None, **kwargs)
    info["build_s"] = time.perf_counter() - t0
    info["params"] = int(model.count_params())
    info["rss_after_build_mb"] = rss_mb()
    if spec.get("count_flops", True):
        from benchmarks.flops import count_model

        count = count_model(model, shape)
        info["flops"] = count.summary()
        info["flops"]["by_layer_gmacs"] = {k: v / 1e9 for k, v in count.by_prefix(2).items()}
    if spec.get("flops_only"):
        return info, None
    x = np.random.default_rng(0).uniform(0, 255, size=shape).astype("float32")
    jit = bool(spec.get("jit", True))
    mode = spec.get("mode", "forward")
    if mode == "forward":
        return info, make_forward(model, x, jit)
    if mode == "train":
        return info, make_train_step(model, x, kwargs.get("num_classes", 400), jit)
    raise ValueError(f"Unknown mode {mode!r}; use 'forward' or 'train'.")


def main(spec: dict) -> dict:
    t_start = time.perf_counter()
    import keras

    if spec.get("dtype_policy"):
        keras.config.set_dtype_policy(spec["dtype_policy"])
    backend = keras.backend.backend()
    result: dict = {"spec": spec, "backend": backend, "keras": keras.__version__}
    result["load_average_start"] = load_average()
    if spec.get("matmul_peak", True):
        result["matmul_peak"] = backend_matmul_peak()
    result["rss_after_imports_mb"] = rss_mb()
    info, call = prepare(spec)
    result.update(info)
    if call is None:
        return result
    result.update(time_spec(spec, call, prepare))
    result["rss_end_mb"] = rss_mb()
    result["worker_wall_s"] = time.perf_counter() - t_start
    result["jit"] = bool(spec.get("jit", True))
    result["threads_env"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS",) if k in os.environ}
    return result


if __name__ == "__main__":
    emit(main(json.loads(sys.argv[1])))
