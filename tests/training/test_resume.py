"""kill -9 a training run mid-epoch, restart the same command: it finishes the planned epochs."""

import json
import os
import signal
import subprocess
import time

import pytest
from training_helpers import csv_epochs, read_summary, run, subprocess_env, train_command

from keras_vtn.data import generate_motion_dataset

EPOCHS = 4


@pytest.fixture(scope="module")
def small_motion(tmp_path_factory):
    return generate_motion_dataset(tmp_path_factory.mktemp("motion"), {"train": 8}, size=36)


def test_kill_and_resume(small_motion, tmp_path):
    output = tmp_path / "run"
    command = train_command(small_motion, output, epochs=EPOCHS, batch_size=4)
    log = output / "log.csv"
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        # Epoch end times from the CSV log; kill 0.4 epoch after the second epoch ended.
        ends: list[float] = []
        deadline = time.monotonic() + 400
        while len(ends) < 2 and time.monotonic() < deadline and process.poll() is None:
            count = len(csv_epochs(log))
            while len(ends) < count:
                ends.append(time.monotonic())
            time.sleep(0.05)
        assert len(ends) >= 2, process.stdout.read()[-3000:] if process.poll() is not None else ""
        first_epoch_s = ends[1] - ends[0]
        time.sleep(0.4 * first_epoch_s)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        assert process.returncode == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
    # The backup says how many epochs had finished when the process died.
    with open(output / "backup" / "training_metadata.json") as f:
        finished = json.load(f)["epoch"]
    assert 1 <= finished < EPOCHS, f"kill landed outside the run: {finished} epochs done"
    logged_at_kill = csv_epochs(log)

    run(command, timeout=400)
    summary = read_summary(output)
    # Resumed at the interrupted epoch: no finished epoch ran twice and none was lost.
    assert summary["first_epoch"] == finished and summary["epochs_run"] == EPOCHS - finished
    assert csv_epochs(log) == logged_at_kill + list(range(finished, EPOCHS))
    steps = 48 // 4
    assert summary["optimizer_iterations"] == EPOCHS * steps
    assert not (output / "backup").exists()  # removed once training completed
    assert (output / "training_curve.png").exists() and (output / "model.keras").exists()
