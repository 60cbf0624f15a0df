"""kill -9 in the middle of a download: the partial file is never used, the next run repairs.

A real child process downloads from a slow server on 127.0.0.1 and is SIGKILLed mid-transfer
(no handler, no cleanup can run); the parent then loads the same entry from a fast server.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import keras_vtn
from keras_vtn.weights import WeightsDownloadError, download

PAYLOAD = os.urandom(3_000_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
FIRST = 256 * 1024  # what the slow server sends before it stalls
REPO = os.path.dirname(os.path.dirname(os.path.abspath(keras_vtn.__file__)))

CHILD = textwrap.dedent(
    """
    import sys
    from keras_vtn.weights import download

    url, sha = sys.argv[1], sys.argv[2] or None
    entry = {"id": "toy/killed", "cache_dir": "test/killed",
             "files": [{"url": url, "fname": "toy.pth", "sha256": sha}]}
    download.fetch_entry(entry)
    """
)


class _Handler(http.server.BaseHTTPRequestHandler):
    timeout = 150

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 - http.server API
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        if self.server.slow:
            self.wfile.write(PAYLOAD[:FIRST])
            self.wfile.flush()
            self.server.release.wait(120)  # stalls until the test ends
            self.close_connection = True
            return
        self.wfile.write(PAYLOAD)


@pytest.fixture
def slow_server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.slow, httpd.release = True, threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/toy.pth"
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


def _parts(folder: str) -> list[str]:
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return [n for n in names if ".part-" in n]


@pytest.mark.parametrize("known_hash", [True, False], ids=["pinned", "trust-on-first-use"])
def test_sigkill_mid_download_leaves_nothing_that_is_used_later(
    keras_home, slow_server, monkeypatch, known_hash
):
    sha = SHA if known_hash else None
    folder = os.path.join(str(keras_home), "keras_vtn", "originals", "test", "killed")
    target = os.path.join(folder, "toy.pth")
    env = dict(
        os.environ,
        KERAS_HOME=str(keras_home),
        PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
        KERAS_VTN_DOWNLOAD_TIMEOUT="300",
    )
    env.pop("KERAS_VTN_OFFLINE", None)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, slow_server.url, sha or ""],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            sizes = [os.path.getsize(os.path.join(folder, n)) for n in _parts(folder)]
            if sizes and max(sizes) >= FIRST:
                break
            if child.poll() is not None:
                pytest.fail(f"the child ended early:\n{child.stdout.read().decode()}")
            assert time.monotonic() < deadline, "the child never started writing"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    # The scenario: a partial file is on disk, the real name is not.
    assert _parts(folder) and not os.path.exists(target)
    # Offline, the partial file is not mistaken for the checkpoint.
    monkeypatch.setenv("KERAS_VTN_OFFLINE", "1")
    entry = {
        "id": "toy/killed",
        "cache_dir": "test/killed",
        "files": [{"url": slow_server.url, "fname": "toy.pth", "sha256": sha}],
    }
    with pytest.raises(WeightsDownloadError, match="downloads are disabled"):
        download.fetch_entry(entry)
    monkeypatch.delenv("KERAS_VTN_OFFLINE")

    slow_server.slow = False
    assert download.fetch_entry(entry) == target
    with open(target, "rb") as handle:
        assert handle.read() == PAYLOAD
    assert download.file_sha256(target) == SHA
    assert download.read_record(target)["sha256"] == SHA  # the recorded (first-use) hash
    # The dead process's part was cleaned up; only the checkpoint and its record remain.
    assert sorted(os.listdir(folder)) == ["toy.pth", "toy.pth.sha256.json"]
