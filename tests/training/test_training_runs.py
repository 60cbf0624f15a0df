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

from keras_vtn.data import generate_motion_dataset, prepare
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


def _copy_keeping(source, target, split, classes) -> list[str]:
    """A copy of a motion dataset whose `split` lists only `classes`; returns the kept rows."""
    shutil.copytree(source, target)
    lines = (target / f"{split}.csv").read_text().splitlines()
    kept = [line for line in lines[1:] if line.split(",")[0] in classes]
    (target / f"{split}.csv").write_text("\n".join(lines[:1] + kept) + "\n")
    return kept


def test_validation_of_a_class_subset_is_scored_against_the_training_classes(small_motion,
                                                                            tmp_path):
    # A validation split holding only 'moving_right' and 'receding' would number them 0 and
    # 1 by itself ('approaching' and 'moving_down' for the model) and score every clip against
    # the wrong class.
    data = tmp_path / "data"
    kept = _copy_keeping(small_motion, data, "val", ("moving_right", "receding"))
    config = TrainConfig.from_preset(
        "motion_demo", family="vivit", model_kwargs=dict(TINY_VIVIT), data_root=str(data),
        layout="csv", output_dir=str(tmp_path / "run"), epochs=1, batch_size=4, verbose=0,
        backup=False,
    )
    summary = train(config)
    label_names = summary["label_names"]
    assert len(label_names) == 6

    import keras

    from keras_vtn.training.run import eval_dataset

    model = keras.saving.load_model(str(tmp_path / "run" / "model.keras"))
    hits = []
    for clips, labels in eval_dataset(config, num_clips=1, num_crops=1,
                                      label_names=label_names).as_numpy_iterator():
        assert {label_names[i] for i in labels} <= {"moving_right", "receding"}
        predicted = np.argmax(keras.ops.convert_to_numpy(model(clips, training=False)), -1)
        hits.extend(predicted == labels)
    assert len(hits) == len(kept)
    logged = last_logged(tmp_path / "run" / "log.csv")
    np.testing.assert_allclose(logged["val_accuracy"], np.mean(hits), atol=1e-6)


def test_fine_tuning_a_run_on_some_of_its_classes_keeps_its_class_list(small_motion, tmp_path):
    first = TrainConfig.from_preset(
        "motion_demo", family="vivit", model_kwargs=dict(TINY_VIVIT),
        data_root=str(small_motion), layout="csv", output_dir=str(tmp_path / "first"),
        epochs=1, batch_size=4, verbose=0, backup=False,
    )
    first.val_split = None
    classes = train(first)["label_names"]
    data = tmp_path / "two_classes"
    _copy_keeping(small_motion, data, "train", ("moving_right", "receding"))
    second = TrainConfig.from_preset(
        "motion_demo", family="vivit", model_kwargs=dict(TINY_VIVIT), data_root=str(data),
        layout="csv", output_dir=str(tmp_path / "second"), epochs=1, batch_size=2, verbose=0,
        backup=False, weights=str(tmp_path / "first" / "model.keras"),
    )
    second.val_split = None
    # The videos keep the first run's indices, so its classifier (all six classes) loads.
    assert train(second)["label_names"] == classes
