"""Multi-device training: `none`, `mirrored` (TensorFlow, one machine), `jax-data-parallel`
(JAX, one machine) or `multi-worker` (JAX, several processes or machines), plus precision
policies.

`multi-worker` runs one process per machine (or per CPU socket), each started with the same
command and `KERAS_DISTRIBUTION_JOB_ADDRESSES` (comma-separated host:port, the first is the
coordinator), `KERAS_DISTRIBUTION_NUM_PROCESSES` and `KERAS_DISTRIBUTION_PROCESS_ID`
(`keras.distribution.initialize`). Every process feeds its shard of the data; the gradients
are averaged over all devices of all processes. Process 0 writes the run's files; the others
write theirs under `worker_<id>/`. Validation (`keras_vtn.training.validation`) gives every
process its share of the videos, padded to the same number of steps. A process that dies (or
is sent SIGTERM) makes the others fail with an error: at once when they wait for it in a
collective, otherwise after `KERAS_VTN_HEARTBEAT_TIMEOUT` seconds (default 30).

Build and compile the model inside `distribution.scope()`; pass the *global* batch to the data
pipeline (Keras splits it across replicas).
"""

from __future__ import annotations

import contextlib
import os

import keras

DISTRIBUTIONS = ("none", "mirrored", "multi-worker", "jax-data-parallel")
JOB_VARIABLES = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                 "KERAS_DISTRIBUTION_PROCESS_ID")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def set_precision(precision: str) -> None:
    """Sets the global Keras dtype policy (models keep float32 logits and statistics)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    keras.config.set_dtype_policy(precision)


def virtual_cpu_devices(count: int) -> None:
    """Splits the host CPU into `count` logical devices, to try multi-device code on a laptop.

    Must run before the backend creates its devices (before building any model or tensor):
    TensorFlow's logical device configuration, JAX's `jax_num_cpu_devices` (the same as
    `XLA_FLAGS=--xla_force_host_platform_device_count=N`, which it overrides).
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
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            if len(jax.devices("cpu")) == count:
                return
            raise RuntimeError(
                f"JAX already created its {len(jax.devices('cpu'))} CPU devices: call "
                "virtual_cpu_devices() before building any model or tensor, or start Python "
                f"with XLA_FLAGS=--xla_force_host_platform_device_count={count}."
            )
        jax.config.update("jax_num_cpu_devices", int(count))
    else:
        raise ValueError(f"virtual CPU devices are not supported on the {backend} backend")


# Seconds without a heartbeat after which JAX's coordination service declares a process dead
# and terminates the others (JAX's default is 100).
HEARTBEAT_TIMEOUT_S = 30


def _initialize_processes() -> None:
    """`keras.distribution.initialize()` with a shorter heartbeat timeout, and SIGTERM that
    terminates the process.

    A process that dies makes the collectives of the others fail (or, when it hangs, the
    coordination service terminates them after `KERAS_VTN_HEARTBEAT_TIMEOUT` seconds, default
    `HEARTBEAT_TIMEOUT_S`). JAX's preemption notifier takes over SIGTERM, which then no longer
    stops a process blocked in a collective; the default action is restored so that
    `kill` ends a worker (whose death then ends the others).
    """
    import signal

    import jax
    from keras.src.backend.jax import distribution_lib as jax_distribution

    addresses = os.environ["KERAS_DISTRIBUTION_JOB_ADDRESSES"].split(",")
    num_processes = int(os.environ["KERAS_DISTRIBUTION_NUM_PROCESSES"])
    if len(addresses) not in (1, num_processes):
        raise ValueError(
            f"KERAS_DISTRIBUTION_JOB_ADDRESSES lists {len(addresses)} addresses for "
            f"KERAS_DISTRIBUTION_NUM_PROCESSES={num_processes} processes."
        )
    timeout = int(os.environ.get("KERAS_VTN_HEARTBEAT_TIMEOUT", HEARTBEAT_TIMEOUT_S))
    jax.distributed.initialize(
        coordinator_address=addresses[0], num_processes=num_processes,
        process_id=int(os.environ["KERAS_DISTRIBUTION_PROCESS_ID"]),
        heartbeat_timeout_seconds=timeout,
    )
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # not the main thread: its owner decides what SIGTERM does
        pass
    # What keras.distribution.initialize does next: one random seed on every process.
    jax_distribution.initialize_rng()


class Distribution:
    """A strategy-like object: `scope()`, `num_replicas` and `name`."""

    def __init__(self, name: str = "none"):
        if name not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, not {name!r}")
        self.name, self.strategy = name, None
        backend = keras.backend.backend()
        self.num_replicas = 1
        self.process_id = 0
        if name == "mirrored":
            if backend != "tensorflow":
                raise ValueError(
                    f"distribution {name!r} needs KERAS_BACKEND=tensorflow (backend is {backend}); "
                    "use 'jax-data-parallel' on JAX."
                )
            import tensorflow as tf

            devices = [d.name for d in tf.config.list_logical_devices("GPU")]
            devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
            self.strategy = tf.distribute.MirroredStrategy(devices=devices)
            self.num_replicas = self.strategy.num_replicas_in_sync
        elif name == "multi-worker":
            if backend != "jax":
                raise ValueError(
                    "distribution 'multi-worker' needs KERAS_BACKEND=jax: Keras 3's fit does not "
                    "run under TensorFlow's MultiWorkerMirroredStrategy (its PerReplica batches "
                    "fail, keras-team/keras#20585). On one machine use 'mirrored' "
                    "(TensorFlow) or 'jax-data-parallel'."
                )
            missing = [v for v in JOB_VARIABLES if v not in os.environ]
            if missing:
                raise ValueError(
                    f"multi-worker needs {', '.join(missing)} in the environment of every "
                    "process: the comma-separated host:port of all processes (the first "
                    "coordinates), their number and this process's index, e.g. "
                    "KERAS_DISTRIBUTION_JOB_ADDRESSES=10.0.0.1:1234,10.0.0.2:1234 "
                    "KERAS_DISTRIBUTION_NUM_PROCESSES=2 KERAS_DISTRIBUTION_PROCESS_ID=0."
                )
            import jax

            # CPU processes exchange gradients through gloo (no-op for accelerators).
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
            _initialize_processes()
            self.process_id = jax.process_index()
            devices = keras.distribution.list_devices()
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
            self.num_replicas = len(devices)
        elif name == "jax-data-parallel":
            if backend != "jax":
                raise ValueError(
                    f"'jax-data-parallel' needs KERAS_BACKEND=jax (backend is {backend})."
                )
            devices = keras.distribution.list_devices()
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
            self.num_replicas = len(devices)

    def output_dir(self, output_dir: str) -> str:
        """Where this process writes: `output_dir` on process 0, `worker_<id>/` inside it else."""
        if self.process_id == 0:
            return output_dir
        return os.path.join(output_dir, f"worker_{self.process_id}")

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
