"""Small end-to-end runs: a clean console with exact validation metrics, and TFRecord training
whose steps per epoch come from the manifest."""

import shutil

import numpy as np
import pytest
from training_helpers import (
    TINY_VIVIT,
    last_logged,
    reference_val_metrics,
    run,
    train_command,
)

from keras_vtn.data import prepare
from keras_vtn.datasets import generate_motion_dataset
from keras_vtn.training import TrainConfig, train


@pytest.fixture(scope="module")
def small_motion(tmp_path_factory):
    return generate_motion_dataset(tmp_path_factory.mktemp("motion"), {"train": 2, "val": 1},
                                   size=36)


def test_a_run_with_validation_has_a_clean_console_and_exact_metrics(small_motion, tmp_path):
    # 6 validation clips in batches of 4: the last batch is partial, and the dataset's length
    # is unknown (broken videos are skipped), which made Keras warn in every first epoch.
    command = train_command(small_motion, tmp_path, epochs=1, batch_size=4,
                            extra=["--val-split", "val", "--verbose", "2"])
    result = run(command, timeout=300)
    console = result.stdout + result.stderr
    assert "ran out of data" not in console, console[-3000:]
    assert "val_accuracy" in console  # the epoch line shows the validation metrics
    logged = last_logged(tmp_path / "log.csv")
    reference = reference_val_metrics(tmp_path / "model.keras", small_motion, 4)
    assert reference["count"] == 6
    for key in ("val_loss", "val_accuracy", "val_top5"):
        np.testing.assert_allclose(logged[key], reference[key], rtol=1e-4, atol=1e-6,
                                   err_msg=key)


def _prepare_train(root, out):
    prepare(str(root / "train.csv"), str(out / "train"), root=str(root / "train"),
            num_shards=2, short_side=None, progress=False)


def test_tfrecord_training_takes_its_steps_from_the_manifest(small_motion, tmp_path):
    data = tmp_path / "records"
    _prepare_train(small_motion, data)
    config = TrainConfig.from_preset(
        "motion_demo", family="vivit", model_kwargs=dict(TINY_VIVIT), data_root=str(data),
        layout="tfrecord", output_dir=str(tmp_path / "run"), epochs=1, batch_size=4,
        verbose=0, save_model=False, backup=False,
    )
    config.val_split = None  # from_preset ignores None overrides
    assert config.steps_per_epoch is None
    summary = train(config)
    assert summary["optimizer_iterations"] == 12 // 4  # 12 videos in the manifest


def test_tfrecords_of_unknown_size_ask_for_steps_per_epoch(small_motion, tmp_path):
    data = tmp_path / "records"
    _prepare_train(small_motion, data)
    bare = tmp_path / "bare" / "train"
    bare.mkdir(parents=True)
    for shard in (data / "train").glob("*.tfrecord"):  # no manifest, no markers
        shutil.copy(shard, bare)
    config = TrainConfig.from_preset(
        "motion_demo", family="vivit", model_kwargs=dict(TINY_VIVIT),
        data_root=str(tmp_path / "bare"), layout="tfrecord", output_dir=str(tmp_path / "run"),
        epochs=1, batch_size=4, verbose=0,
    )
    config.val_split = None
    with pytest.raises(ValueError, match="--steps-per-epoch"):
        train(config)
