"""Mixed precision training steps stay finite; MirroredStrategy (2 logical CPUs), JAX data
parallel (2 host devices from --virtual-cpus) train the same model through the example script
(multi-worker JAX: test_multi_worker.py)."""

import importlib.util
import math

import keras
import numpy as np
import pytest
from training_helpers import (
    TINY_VIVIT,
    last_logged,
    read_summary,
    reference_val_metrics,
    run,
    to_numpy,
    train_command,
)

from keras_vtn.data import generate_motion_dataset
from keras_vtn.training import (
    Distribution,
    SmoothedCrossEntropy,
    TrainConfig,
    build_model,
    build_optimizer,
    set_precision,
    train,
)

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


@pytest.fixture(scope="module")
def small_motion(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion")
    return generate_motion_dataset(root, {"train": 2, "val": 1}, size=36)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training_steps_are_finite(policy):
    set_precision(policy)
    keras.utils.set_random_seed(0)
    model = build_model("vivit", **TINY_VIVIT, num_classes=6, num_frames=8, image_size=32)
    model.compile(build_optimizer("adamw", 1e-3, weight_decay=0.05, model=model,
                                  global_clipnorm=1.0),
                  SmoothedCrossEntropy(0.1))
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (8, 8, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 6, 8)
    history = model.fit(clips, labels, batch_size=4, epochs=2, verbose=0)
    assert all(math.isfinite(v) for v in history.history["loss"])
    assert all(np.isfinite(to_numpy(w)).all() for w in model.trainable_weights)
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    assert keras.backend.standardize_dtype(model(clips[:2]).dtype) == "float32"
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


def _check(output):
    summary = read_summary(output)
    assert summary["replicas"] == 2
    assert all(math.isfinite(v) for v in summary["history"]["loss"])
    assert summary["optimizer_iterations"] == 12 // 4
    return summary


def test_mirrored_strategy_on_two_logical_cpus(small_motion, tmp_path):
    """With validation: each of the 6 clips once (batches of 4 and 2 over 2 replicas)."""
    command = train_command(small_motion, tmp_path, epochs=1, batch_size=4,
                            extra=["--distribution", "mirrored", "--virtual-cpus", "2",
                                   "--val-split", "val"])
    run(command, timeout=300)
    _check(tmp_path)
    logged = last_logged(tmp_path / "log.csv")
    reference = reference_val_metrics(tmp_path / "model.keras", small_motion, 4)
    assert reference["count"] == 6
    for key in ("val_loss", "val_accuracy", "val_top5"):
        np.testing.assert_allclose(logged[key], reference[key], rtol=1e-4, atol=1e-6,
                                   err_msg=key)


def test_jax_data_parallel_on_two_host_devices(small_motion, tmp_path):
    """`--virtual-cpus 2` gives JAX 2 CPU devices (no XLA_FLAGS needed)."""
    command = train_command(small_motion, tmp_path, epochs=1, batch_size=4,
                            extra=["--distribution", "jax-data-parallel", "--virtual-cpus", "2"])
    run(command, timeout=300, KERAS_BACKEND="jax", XLA_FLAGS="")
    summary = _check(tmp_path)
    assert summary["parameters"] == build_model(
        "vivit", **TINY_VIVIT, num_classes=6, num_frames=8, image_size=32).count_params()


def test_multi_worker_on_tensorflow_is_a_clear_error():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("checks the TensorFlow message")
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax.*keras-team/keras#20585"):
        Distribution("multi-worker")


def test_recipe_options_together(small_motion, tmp_path):
    """MixUp (one-hot labels, also for validation), label smoothing, Nesterov SGD with a step
    schedule and gradient accumulation in one `train()` run."""
    config = TrainConfig.from_preset(
        "motion_demo", family="vivit", model_kwargs=dict(TINY_VIVIT), data_root=str(small_motion),
        output_dir=str(tmp_path), epochs=2, batch_size=4, mixup_alpha=0.4, label_smoothing=0.1,
        optimizer="nesterov", learning_rate=0.01, weight_decay=1e-4, schedule="step",
        milestones=(1,), gradient_accumulation_steps=3, verbose=0, save_model=False,
        tensorboard=HAS_TENSORBOARD,
    )
    result = train(config)
    history = result["history"]
    assert all(math.isfinite(v) for v in history["loss"] + history["val_loss"])
    assert len(history["val_accuracy"]) == 2
    assert (tmp_path / "log.csv").exists() and (tmp_path / "best.weights.h5").exists()
    if HAS_TENSORBOARD:
        assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


@pytest.mark.skipif(HAS_TENSORBOARD, reason="checks the error without the tensorboard package")
def test_tensorboard_without_the_package_is_a_clear_error(tmp_path):
    from keras_vtn.training import training_callbacks

    with pytest.raises(ImportError, match="pip install tensorboard"):
        training_callbacks(tmp_path, tensorboard=True)
