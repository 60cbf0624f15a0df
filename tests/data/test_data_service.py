"""tf.data service with real processes on 127.0.0.1: one dispatcher, two `keras-vtn data-service
worker`s, tiny videos. The test that kills a worker runs last (the servers are shared)."""

from __future__ import annotations

import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from keras_vtn.data import dataset_info, prepare, tfrecord_dataset, video_dataset  # noqa: E402
from keras_vtn.data.testing import write_video  # noqa: E402

NUM_VIDEOS = 12
START_TIMEOUT = 90  # s, to start the three servers together on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "keras-vtn")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "keras_vtn.cli"]


def _start(*args) -> subprocess.Popen:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen([*_command(), "data-service", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)


def _wait_ready(process: subprocess.Popen, deadline: float) -> str:
    """The server's first line ("... dispatcher at ..." / "... worker ..."), or a failure."""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line = process.stdout.readline()
            if line:
                return line
        if process.poll() is not None:
            pytest.fail(f"server exited with status {process.returncode}")
    pytest.fail("server did not start in time")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def servers():
    port = _free_port()
    dispatcher = _start("dispatcher", "--port", str(port))
    # started together: the workers wait for the dispatcher to answer
    workers = [_start("worker", "--dispatcher", f"127.0.0.1:{port}", "--heartbeat", "0.2")
               for _ in range(2)]
    deadline = time.monotonic() + START_TIMEOUT
    try:
        assert "dispatcher at" in _wait_ready(dispatcher, deadline)
        servers = []  # (worker command, pid of its serving process)
        for worker in workers:
            line = _wait_ready(worker, deadline)
            assert f"serving dispatcher 127.0.0.1:{port}" in line
            servers.append((worker, int(re.search(r"\(pid (\d+)\)", line).group(1))))
        yield {"service": f"grpc://127.0.0.1:{port}", "workers": servers}
    finally:
        for process in [*workers, dispatcher]:
            _stop(process)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """(path, label) with label = the video's number, so a clip names its video; plus one
    file that is not a video."""
    root = tmp_path_factory.mktemp("service_videos")
    out = []
    for i in range(NUM_VIDEOS):
        path = str(root / f"v{i:02d}.mp4")
        write_video(path, num_frames=24 + 2 * i, seed=i)
        out.append((path, i))
    broken = root / "broken.mp4"
    broken.write_bytes(b"not a video" * 50)
    out.append((str(broken), NUM_VIDEOS))
    return out


OPTIONS = dict(num_frames=4, image_size=32, short_side=36, label_names=None)


def _labels_of(ds, limit=1000):
    labels = []
    for _, label in ds.take(limit):
        labels.append(int(label))
    return labels


def test_evaluation_delivers_each_video_once(servers, pairs):
    ds = video_dataset(pairs, service=servers["service"], **OPTIONS)
    for _ in range(2):  # two passes: each a job of its own, each video once
        assert sorted(_labels_of(ds)) == list(range(NUM_VIDEOS))
    report = dataset_info(ds).report
    assert report.passes == 2
    for entry in report.history:
        assert entry == {"decoded": NUM_VIDEOS, "failed": 1, "attempted": NUM_VIDEOS + 1,
                         "expected": NUM_VIDEOS + 1, "lost": 0, "duplicated": 0}
    assert report.counts == {"unreadable": 1}
    assert "broken.mp4: unreadable" in report.summary()


def test_dataset_info_survives_transformations_through_the_service(servers, pairs):
    ds = video_dataset(pairs, service=servers["service"], **OPTIONS)
    info = dataset_info(ds)
    assert info.service == servers["service"] and info.num_videos == NUM_VIDEOS + 1
    derived = ds.map(lambda clip, label: (clip, label)).batch(4).prefetch(1)
    assert dataset_info(derived.shuffle(2).repeat(2).take(3)) is info
    assert sum(int(tf.shape(labels)[0]) for _, labels in derived) == NUM_VIDEOS
    assert dataset_info(derived).report.history[-1]["decoded"] == NUM_VIDEOS


def test_same_seed_gives_the_clips_of_the_in_process_pipeline(servers, pairs):
    options = dict(OPTIONS, training=True, seed=7, color_jitter=(0.2, 0.2, 0.2, 0.05))
    local = {int(label): clip.numpy() for clip, label in video_dataset(pairs, **options)}
    remote = {int(label): clip.numpy()
              for clip, label in video_dataset(pairs, service=servers["service"], **options)}
    assert sorted(remote) == sorted(local) == list(range(NUM_VIDEOS))
    for label in local:  # same frames, same crop, flip and jitter, whoever decoded them
        np.testing.assert_array_equal(remote[label], local[label])


def test_tfrecords_through_the_service(servers, pairs, tmp_path):
    out = str(tmp_path / "shards")
    prepare(pairs[:NUM_VIDEOS], out, num_shards=4, short_side=36, progress=False)
    ds = tfrecord_dataset(out, service=servers["service"], **OPTIONS)
    assert dataset_info(ds).num_videos == NUM_VIDEOS
    labels = _labels_of(ds)
    assert sorted(labels) == list(range(NUM_VIDEOS))
    assert dataset_info(ds).report.history[-1] == {
        "decoded": NUM_VIDEOS, "failed": 0, "attempted": NUM_VIDEOS, "duplicated": 0,
        "expected": NUM_VIDEOS, "lost": 0}
    local = tfrecord_dataset(out, **OPTIONS)
    assert sorted(_labels_of(local)) == sorted(labels)


def test_a_pass_left_midway_is_not_waited_for(servers, pairs, caplog):
    """Breaking out of a pass: nobody waits for its clips any more, so no warning follows,
    and the dataset reads whole passes again afterwards."""
    ds = video_dataset(pairs, service=servers["service"], training=True, repeat=True,
                       service_wait=0.5, **OPTIONS)
    with caplog.at_level(logging.WARNING, logger="keras_vtn.data"):
        for _clip, _label in ds:
            break
        time.sleep(3)
    assert "no element" not in caplog.text
    assert len(_labels_of(ds, limit=NUM_VIDEOS)) == NUM_VIDEOS


def test_unreachable_dispatcher_is_a_clear_error_soon(pairs):
    port = _free_port()
    start = time.monotonic()
    with pytest.raises(ConnectionError) as raised:
        video_dataset(pairs, service=f"grpc://127.0.0.1:{port}", **OPTIONS)
    assert time.monotonic() - start < 10
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message
    assert "keras-vtn data-service dispatcher --port" in message
    assert "keras-vtn data-service worker --dispatcher" in message
    # a worker pointed at nothing gives up after --wait with the same hint
    worker = subprocess.run(
        [*_command(), "data-service", "worker", "--dispatcher", f"127.0.0.1:{port}", "--wait",
         "1"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert worker.returncode == 2
    assert f"127.0.0.1:{port}" in worker.stderr
    assert "keras-vtn data-service dispatcher" in worker.stderr


def test_training_goes_on_when_a_worker_is_killed(servers, pairs, caplog):
    """SIGKILL on one worker's server mid-pass: `keras-vtn data-service worker` starts it again
    at the same address, the pass goes on and loses at most what the dead server held
    (counted in the report, nothing delivered twice); the next passes are whole."""
    ds = video_dataset(pairs, service=servers["service"], training=True, repeat=True, seed=1,
                       **OPTIONS)
    command, server_pid = servers["workers"][1]
    expected = NUM_VIDEOS + 1
    deadline = time.monotonic() + 75
    received = 0
    with caplog.at_level(logging.WARNING, logger="keras_vtn.data"):
        for _clip, _label in ds:
            received += 1
            if received == 3:
                os.kill(server_pid, signal.SIGKILL)
            if dataset_info(ds).report.passes >= 3 or time.monotonic() > deadline:
                break
    restarted = _wait_ready(command, time.monotonic() + 5)  # the new server's first line
    assert f"(pid {server_pid})" not in restarted
    history = dataset_info(ds).report.history
    print("passes around the kill:", history)
    assert len(history) >= 3, history
    first = history[0]
    assert first["duplicated"] == 0
    assert 0 <= first["lost"] <= NUM_VIDEOS // 2 + 1  # what one of two workers held at most
    assert first["decoded"] + first["failed"] + first["lost"] == expected
    for entry in history[1:]:
        assert entry["lost"] == entry["duplicated"] == 0
        assert entry["decoded"] + entry["failed"] == expected
    if first["lost"]:
        assert "never came back" in caplog.text


def test_a_dispatcher_without_workers_is_named_in_a_warning(pairs, caplog):
    """No worker registered: the client warns after `service_wait` seconds, naming the
    dispatcher and the command that starts a worker, and keeps warning while it waits; the
    clip comes once a worker starts."""
    port = _free_port()
    dispatcher = _start("dispatcher", "--port", str(port))
    worker = None
    try:
        assert "dispatcher at" in _wait_ready(dispatcher, time.monotonic() + START_TIMEOUT)
        ds = video_dataset(pairs, service=f"grpc://127.0.0.1:{port}", service_wait=1.0,
                           **OPTIONS)
        got = []
        with caplog.at_level(logging.WARNING, logger="keras_vtn.data"):
            # the read blocks until a worker registers: it runs aside
            iterator = iter(ds)
            reader = threading.Thread(target=lambda it: got.append(next(it)), args=(iterator,),
                                      daemon=True)
            reader.start()
            deadline = time.monotonic() + 30
            warnings = []
            while len(warnings) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
                warnings = [r.getMessage() for r in caplog.records
                            if "no tf.data service worker is registered" in r.getMessage()]
            assert len(warnings) >= 2, caplog.text
            assert not got
            assert f"grpc://127.0.0.1:{port}" in warnings[0]
            assert f"keras-vtn data-service worker --dispatcher 127.0.0.1:{port}" in warnings[0]
            worker = _start("worker", "--dispatcher", f"127.0.0.1:{port}", "--heartbeat", "0.2")
            reader.join(START_TIMEOUT)
        assert got and got[0][0].shape == (4, 32, 32, 3)
        del iterator  # leaves the pass: its watch stops before the dispatcher does
    finally:
        for process in (worker, dispatcher):
            if process is not None:
                _stop(process)
