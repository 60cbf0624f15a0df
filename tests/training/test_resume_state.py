"""What a restart keeps: the best checkpoint and its value, and a usable backup after any kill."""

import json
import os
import signal
import subprocess
import time

import keras
import numpy as np
import pytest
from training_helpers import csv_epochs, read_summary, run, subprocess_env, train_command

from keras_vtn.data import generate_motion_dataset
from keras_vtn.training.callbacks import training_callbacks


def _tiny_model(hidden=()):
    # Fixed names: auto-naming would shift the layer names other tests' doctests print.
    layers = [keras.layers.Dense(units, name=f"hidden_{i}") for i, units in enumerate(hidden)]
    model = keras.Sequential([keras.Input((4,)), *layers, keras.layers.Dense(3, name="probe")])
    model.compile(keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _callbacks(output, model, **kwargs):
    callbacks = keras.callbacks.CallbackList(training_callbacks(output, csv=False, **kwargs),
                                             model=model)
    return callbacks


def _end_epoch(callbacks, model, epoch, val_accuracy, mark=None):
    # The weights spell a mark (the epoch), so the checkpoint on disk says which one it holds.
    mark = epoch if mark is None else mark
    model.set_weights([np.full(w.shape, mark, w.dtype) for w in model.get_weights()])
    callbacks.on_epoch_begin(epoch)
    callbacks.on_epoch_end(epoch, {"val_accuracy": val_accuracy})


def _epoch_in(path):
    model = _tiny_model()
    model.load_weights(path)
    return int(model.get_weights()[0].flat[0])


def test_a_resumed_run_keeps_the_best_checkpoint_of_the_run_before_the_crash(tmp_path):
    model = _tiny_model()
    callbacks = _callbacks(tmp_path, model)
    callbacks.on_train_begin()
    _end_epoch(callbacks, model, 0, 0.9)
    _end_epoch(callbacks, model, 1, 0.5)
    best = tmp_path / "best.weights.h5"
    assert _epoch_in(best) == 0
    # The process dies here (no on_train_end); a new one builds everything again.
    model = _tiny_model()
    callbacks = _callbacks(tmp_path, model)
    callbacks.on_train_begin()
    assert model._initial_epoch == 2
    _end_epoch(callbacks, model, 2, 0.7)  # worse than epoch 0: must not replace it
    assert _epoch_in(best) == 0
    _end_epoch(callbacks, model, 3, 0.95)
    assert _epoch_in(best) == 3


def test_a_fresh_run_does_not_inherit_an_old_best_value(tmp_path):
    model = _tiny_model()
    callbacks = _callbacks(tmp_path, model)
    callbacks.on_train_begin()
    _end_epoch(callbacks, model, 0, 0.9)
    callbacks.on_train_end()  # finished: the backup is gone, a rerun is a new run
    assert not (tmp_path / "backup").exists()
    model = _tiny_model()
    callbacks = _callbacks(tmp_path, model)
    callbacks.on_train_begin()
    _end_epoch(callbacks, model, 0, 0.4, mark=7)
    assert _epoch_in(tmp_path / "best.weights.h5") == 7


class _Crash(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise RuntimeError("crash")


def _fit(output, epochs, crash_at=None, hidden=()):
    model = _tiny_model(hidden)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.integers(0, 3, 16)
    callbacks = training_callbacks(output, csv=False, monitor="accuracy")
    if crash_at is not None:
        callbacks.append(_Crash(crash_at))
    history = model.fit(x, y, batch_size=8, epochs=epochs, callbacks=callbacks, verbose=0)
    return model, history


def _tear(path):
    """What a kill in the middle of a non-atomic write leaves: the first half of the file."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_torn_training_metadata_resumes_from_the_previous_state(tmp_path):
    with pytest.raises(RuntimeError, match="crash"):
        _fit(tmp_path, 5, crash_at=3)
    metadata = tmp_path / "backup" / "training_metadata.json"
    assert json.loads(metadata.read_text())["epoch"] == 3
    _tear(metadata)
    with pytest.warns(UserWarning, match="training_metadata.json"):
        model, history = _fit(tmp_path, 5)
    # The previous state (2 finished epochs) was restored: epochs 2-4 ran, none was lost.
    assert history.epoch == [2, 3, 4]
    assert int(model.optimizer.iterations) == 5 * 2
    assert not (tmp_path / "backup").exists()


def test_no_usable_backup_state_starts_over_instead_of_failing(tmp_path):
    with pytest.raises(RuntimeError, match="crash"):
        _fit(tmp_path, 4, crash_at=2)
    backup = tmp_path / "backup"
    for name in os.listdir(backup):
        if name.endswith(".h5") or name.endswith(".bkp"):
            _tear(backup / name)
    with pytest.warns(UserWarning, match="starts from epoch 0"):
        model, history = _fit(tmp_path, 4)
    assert history.epoch == [0, 1, 2, 3] and int(model.optimizer.iterations) == 4 * 2


def test_a_backup_that_fits_only_part_of_the_model_leaves_no_part_loaded(tmp_path):
    with pytest.raises(RuntimeError, match="crash"):
        _fit(tmp_path, 4, crash_at=2, hidden=(5,))
    # Another model in the same folder: its first layer matches the backup, the next does not.
    model = _tiny_model(hidden=(5, 6))
    model.optimizer.build(model.trainable_variables)
    before = [w.copy() for w in model.get_weights()]
    callbacks = _callbacks(tmp_path, model, monitor="accuracy")
    with pytest.warns(UserWarning, match="starts from epoch 0"):
        callbacks.on_train_begin()
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert int(model.optimizer.iterations) == 0 and model._initial_epoch == 0


EPOCHS = 4


@pytest.fixture(scope="module")
def motion_with_val(tmp_path_factory):
    return generate_motion_dataset(tmp_path_factory.mktemp("motion"), {"train": 4, "val": 1},
                                   size=36)


def test_kill_9_mid_epoch_keeps_the_best_checkpoint_and_a_usable_backup(motion_with_val, tmp_path):
    output = tmp_path / "run"
    # Learning rate 0: the weights never change, so every epoch ties the first one and none
    # may replace best.weights.h5; a restart that forgot the best value would rewrite it.
    command = train_command(motion_with_val, output, epochs=EPOCHS, batch_size=4,
                            extra=["--val-split", "val", "--lr", "0"])
    log, best = output / "log.csv", output / "best.weights.h5"
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        ends: list[float] = []
        deadline = time.monotonic() + 400
        while len(ends) < 2 and time.monotonic() < deadline and process.poll() is None:
            count = len(csv_epochs(log))
            while len(ends) < count:
                ends.append(time.monotonic())
            time.sleep(0.05)
        assert len(ends) >= 2, process.stdout.read()[-3000:] if process.poll() is not None else ""
        assert best.exists() and (output / "backup" / "training_metadata.json").exists()
        time.sleep(0.4 * (ends[1] - ends[0]))
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        assert process.returncode == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    with open(output / "backup" / "training_metadata.json") as f:
        finished = json.load(f)["epoch"]
    assert 1 <= finished < EPOCHS, f"kill landed outside the run: {finished} epochs done"
    saved = best.stat().st_mtime_ns, best.read_bytes()

    run(command, timeout=400)
    summary = read_summary(output)
    assert summary["first_epoch"] == finished and summary["epochs_run"] == EPOCHS - finished
    accuracy = summary["full_history"]["val_accuracy"]
    assert len(accuracy) == EPOCHS and len(set(accuracy)) == 1
    assert (best.stat().st_mtime_ns, best.read_bytes()) == saved
    assert summary["best_checkpoint"] == {"monitor": "val_accuracy",
                                          "value": pytest.approx(accuracy[0]), "epoch": 0}
    assert not (output / "backup").exists()
