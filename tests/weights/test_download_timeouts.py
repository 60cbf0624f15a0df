"""A server that stops sending must not hang a download: real sockets on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from keras_vtn.weights import WeightsDownloadError, download, register, unregister

TIMEOUT = 0.5
TIMEOUT_ENV = "KERAS_VTN_DOWNLOAD_TIMEOUT"  # the documented name, spelled out on purpose


def _silent_server(stop: threading.Event, send_headers: bool) -> tuple[socket.socket, str]:
    """Accepts connections; after the request it sends headers (or nothing) and goes quiet."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)

    def serve():
        held = []
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)
            conn.recv(65536)
            if send_headers:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 10)
        for conn in held:
            conn.close()
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}/toy.pth"


@pytest.fixture
def stalled(keras_home, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv(TIMEOUT_ENV, str(TIMEOUT))
    stop = threading.Event()
    added = []

    def make(send_headers: bool) -> dict:
        _, url = _silent_server(stop, send_headers)
        entry = {
            "id": "toy/stalled",
            "name": "stalled",
            "family": "toy",
            "match": {},
            "kind": "video",
            "config": {},
            "format": "pytorch",
            "files": [{"url": url, "fname": "toy.pth", "sha256": None}],
            "cache_dir": "test/stalled",
        }
        register(entry)
        added.append(entry["id"])
        return entry

    yield make
    stop.set()
    for entry_id in added:
        unregister(entry_id)


def _fetch_with_watchdog(entry: dict, limit: float = 20.0) -> BaseException:
    """Run fetch_entry in a thread so a hang fails the test instead of blocking the suite."""
    outcome: list[BaseException | str] = []

    def run():
        try:
            download.fetch_entry(entry)
            outcome.append("returned")
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert outcome, f"the download was still blocked after {limit} s (no timeout)"
    assert outcome[0] != "returned"
    return outcome[0]


@pytest.mark.parametrize("send_headers", [True, False], ids=["headers-then-silence", "no-reply"])
def test_silent_server_times_out_with_a_clear_error_and_no_part_file(
    stalled, keras_home, send_headers
):
    entry = stalled(send_headers)
    url = entry["files"][0]["url"]
    started = time.monotonic()
    err = _fetch_with_watchdog(entry)
    elapsed = time.monotonic() - started
    assert isinstance(err, WeightsDownloadError), repr(err)
    message = str(err)
    assert url in message
    assert f"{TIMEOUT:g} s" in message and TIMEOUT_ENV in message
    assert "place it at" in message  # what to do instead
    assert elapsed < 10, elapsed
    folder = os.path.join(str(keras_home), "keras_vtn", "originals", "test", "stalled")
    assert os.listdir(folder) == []  # no 0-byte .part left behind for a day
    assert err.__cause__ is None and err.__suppress_context__


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_bad_timeout_setting_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv(TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match=TIMEOUT_ENV):
        download.download_timeout()


def test_default_timeout(monkeypatch):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert download.download_timeout() == download.DEFAULT_TIMEOUT == 30.0
    assert download.TIMEOUT_ENV == TIMEOUT_ENV
