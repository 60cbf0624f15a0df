"""Multi-worker JAX training (2 processes on 127.0.0.1, one CPU device each, synchronised
through gloo) with validation: uneven validation shares finish with exact metrics, a worker
killed mid-epoch ends the other with an error, and SIGTERM stops a worker blocked in a
collective."""

import math
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from training_helpers import (
    REPO,
    csv_epochs,
    last_logged,
    read_summary,
    reference_val_metrics,
    subprocess_env,
    train_command,
)

from keras_vtn.data import generate_motion_dataset

BATCH = 16


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    # 48 training and 18 validation clips: with a global batch of 16 over 2 processes the
    # validation videos split 9 / 9 into local batches of 8, i.e. 2 steps each, while Keras'
    # own sharding of the global batches (16, 2) gives one process 2 steps and the other 1.
    return generate_motion_dataset(tmp_path_factory.mktemp("motion"), {"train": 8, "val": 3},
                                   size=36)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_workers(data_root, output, epochs, logs_dir):
    addresses = f"127.0.0.1:{_free_port()},127.0.0.1:{_free_port()}"
    command = train_command(data_root, output, epochs=epochs, batch_size=BATCH,
                            extra=["--distribution", "multi-worker", "--val-split", "val"])
    workers, logs = [], []
    for i in range(2):
        log = open(logs_dir / f"worker_{i}.log", "w")  # a file: no pipe to fill up
        logs.append(log)
        workers.append(subprocess.Popen(
            command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            env=subprocess_env(KERAS_BACKEND="jax", KERAS_DISTRIBUTION_JOB_ADDRESSES=addresses,
                               KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                               KERAS_DISTRIBUTION_PROCESS_ID=str(i))))
    return workers, logs


def _stop(workers, logs):
    for w in workers:
        if w.poll() is None:
            w.kill()
            w.wait(30)
    for log in logs:
        log.close()


def _tail(path, n=3000) -> str:
    return path.read_text(errors="replace")[-n:]


def test_uneven_validation_shares_finish_with_exact_metrics(motion, tmp_path):
    output = tmp_path / "run"
    workers, logs = _start_workers(motion, output, 1, tmp_path)
    try:
        for w in workers:
            w.wait(timeout=300)
    finally:
        _stop(workers, logs)
    assert [w.returncode for w in workers] == [0, 0], "\n".join(
        _tail(tmp_path / f"worker_{i}.log") for i in range(2))
    chief = last_logged(output / "log.csv")
    other = last_logged(output / "worker_1" / "log.csv")
    reference = reference_val_metrics(output / "model.keras", motion, BATCH)
    assert reference["count"] == 18
    for key in ("val_loss", "val_accuracy", "val_top5"):
        # Over the 18 clips exactly once: accuracies are multiples of 1/18, no padding counted.
        np.testing.assert_allclose(chief[key], reference[key], rtol=1e-4, atol=1e-6,
                                   err_msg=key)
        np.testing.assert_allclose(other[key], chief[key], rtol=1e-6, err_msg=key)
    assert math.isclose(chief["val_accuracy"] * 18, round(chief["val_accuracy"] * 18),
                        abs_tol=1e-6)
    summary = read_summary(output)
    assert summary["replicas"] == 2 and summary["optimizer_iterations"] == 48 // BATCH
    assert summary["best_checkpoint"]["monitor"] == "val_accuracy"
    # One global model: the same global batches and averaged gradients give both processes
    # the same training losses.
    other_summary = read_summary(output / "worker_1")
    assert other_summary["replicas"] == 2
    np.testing.assert_allclose(summary["history"]["loss"], other_summary["history"]["loss"],
                               rtol=1e-6)


def test_a_killed_worker_ends_the_other_with_an_error(motion, tmp_path):
    output = tmp_path / "run"
    workers, logs = _start_workers(motion, output, 50, tmp_path)
    try:
        # Kill worker 1 once both have finished an epoch (with its validation): mid-training.
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and all(w.poll() is None for w in workers):
            if csv_epochs(output / "log.csv") and csv_epochs(output / "worker_1" / "log.csv"):
                break
            time.sleep(0.1)
        assert all(w.poll() is None for w in workers), "\n".join(
            _tail(tmp_path / f"worker_{i}.log") for i in range(2))
        assert csv_epochs(output / "log.csv"), "no epoch finished in time"
        time.sleep(0.5)
        os.kill(workers[1].pid, signal.SIGKILL)
        killed = time.monotonic()
        try:
            workers[0].wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("worker 0 still runs 120 s after worker 1 was killed:\n"
                        + _tail(tmp_path / "worker_0.log"))
        waited = time.monotonic() - killed
    finally:
        _stop(workers, logs)
    log = _tail(tmp_path / "worker_0.log", 6000)
    assert workers[0].returncode not in (0, None), log
    assert "Error" in log or "error" in log, log
    assert waited < 120


_BLOCKED_WORKER = """
import time
import numpy as np
from keras_vtn.training import Distribution
Distribution("multi-worker")
import jax
from jax.experimental import multihost_utils
print("ready", flush=True)
if jax.process_index() == 1:
    multihost_utils.process_allgather(np.zeros(1))  # process 0 never joins: blocked in gloo
else:
    time.sleep(600)
"""


def test_sigterm_ends_a_worker_blocked_in_a_collective_and_then_the_others(tmp_path):
    """JAX's preemption notifier swallows SIGTERM; a worker must still stop when signalled,
    and the others must then fail (heartbeat timeout) instead of waiting for it."""
    addresses = f"127.0.0.1:{_free_port()},127.0.0.1:{_free_port()}"
    logs = [open(tmp_path / f"worker_{i}.log", "w") for i in range(2)]
    workers = [
        subprocess.Popen([sys.executable, "-c", _BLOCKED_WORKER], cwd=REPO, stdout=logs[i],
                         stderr=subprocess.STDOUT,
                         env=subprocess_env(KERAS_BACKEND="jax",
                                            KERAS_DISTRIBUTION_JOB_ADDRESSES=addresses,
                                            KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                                            KERAS_DISTRIBUTION_PROCESS_ID=str(i),
                                            KERAS_VTN_HEARTBEAT_TIMEOUT="5"))
        for i in range(2)
    ]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(
                "ready" in (tmp_path / f"worker_{i}.log").read_text() for i in range(2)):
            assert all(w.poll() is None for w in workers), _tail(tmp_path / "worker_0.log")
            time.sleep(0.1)
        time.sleep(1)  # worker 1 is now inside the all-gather
        workers[1].send_signal(signal.SIGTERM)
        try:
            workers[1].wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM did not stop a worker blocked in a collective")
        assert workers[1].returncode == -signal.SIGTERM
        try:
            workers[0].wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail("worker 0 still runs 90 s after worker 1 ended:\n"
                        + _tail(tmp_path / "worker_0.log"))
    finally:
        _stop(workers, logs)
    assert workers[0].returncode != 0
    assert "heartbeat" in _tail(tmp_path / "worker_0.log", 6000).lower()
