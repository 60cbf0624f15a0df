"""Multi-device training: `none`, `mirrored`, `multi-worker` (TensorFlow) or
`jax-data-parallel` (JAX), plus precision policies.

Build and compile the model inside `distribution.scope()`; pass the *global* batch to the data
pipeline (Keras splits it across replicas).
"""

from __future__ import annotations

import contextlib
import os

import keras

DISTRIBUTIONS = ("none", "mirrored", "multi-worker", "jax-data-parallel")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def set_precision(precision: str) -> None:
    """Sets the global Keras dtype policy (models keep float32 logits and statistics)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    keras.config.set_dtype_policy(precision)


def virtual_cpu_devices(count: int) -> None:
    """Splits the host CPU into `count` logical devices, to try multi-device code on a laptop.

    TensorFlow: must run before TensorFlow initialises its devices. JAX: needs
    `XLA_FLAGS=--xla_force_host_platform_device_count=N` in the environment before `jax`
    is imported; this function checks it.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
            )
        except RuntimeError as error:
            raise RuntimeError(
                "virtual_cpu_devices() must be called before TensorFlow creates its devices "
                "(before building any model or tensor)."
            ) from error
    elif backend == "jax":
        import jax

        if len(jax.devices("cpu")) < count:
            raise RuntimeError(
                f"JAX sees {len(jax.devices('cpu'))} CPU devices; start Python with "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={count}."
            )
    else:
        raise ValueError(f"virtual CPU devices are not supported on the {backend} backend")


class Distribution:
    """A strategy-like object: `scope()`, `num_replicas` and `name`."""

    def __init__(self, name: str = "none"):
        if name not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, not {name!r}")
        self.name, self.strategy = name, None
        backend = keras.backend.backend()
        self.num_replicas = 1
        if name in ("mirrored", "multi-worker"):
            if backend != "tensorflow":
                raise ValueError(
                    f"distribution {name!r} needs KERAS_BACKEND=tensorflow (backend is {backend}); "
                    "use 'jax-data-parallel' on JAX."
                )
            import tensorflow as tf

            if name == "mirrored":
                devices = [d.name for d in tf.config.list_logical_devices("GPU")]
                devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
                self.strategy = tf.distribute.MirroredStrategy(devices=devices)
            else:
                if "TF_CONFIG" not in os.environ:
                    raise ValueError(
                        "multi-worker needs TF_CONFIG describing the cluster, see "
                        "https://www.tensorflow.org/guide/distributed_training#TF_CONFIG"
                    )
                self.strategy = tf.distribute.MultiWorkerMirroredStrategy()
            self.num_replicas = self.strategy.num_replicas_in_sync
        elif name == "jax-data-parallel":
            if backend != "jax":
                raise ValueError(
                    f"'jax-data-parallel' needs KERAS_BACKEND=jax (backend is {backend})."
                )
            devices = keras.distribution.list_devices()
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
            self.num_replicas = len(devices)

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def check_batch(self, global_batch_size: int) -> None:
        if global_batch_size % self.num_replicas:
            raise ValueError(
                f"global batch {global_batch_size} is not divisible by the {self.num_replicas} "
                "replicas; pick a multiple."
            )

    def __repr__(self) -> str:
        return f"Distribution({self.name!r}, num_replicas={self.num_replicas})"
