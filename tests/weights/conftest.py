"""Fixtures for the weights tests (helpers importable by tests live in weights_helpers.py)."""

from __future__ import annotations

import http.server
import threading

import pytest
from weights_helpers import SERVER_PAYLOAD


class _Handler(http.server.BaseHTTPRequestHandler):
    """`/good/...` -> SERVER_PAYLOAD; `/files/<name>` -> server.files[name];
    `/truncated/...` -> announces the full length, sends half, drops the connection; else 404."""

    timeout = 10  # a stuck client cannot hold the server thread for long

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server API
        self.server.hits.append(self.path)
        name = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/good/"):
            self._send(SERVER_PAYLOAD)
        elif self.path.startswith("/files/") and name in self.server.files:
            self._send(self.server.files[name])
        elif self.path.startswith("/truncated/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(SERVER_PAYLOAD)))
            self.end_headers()
            self.wfile.write(SERVER_PAYLOAD[: len(SERVER_PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404, "Not Found")

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(monkeypatch):
    """A real HTTP server on 127.0.0.1 (random port) in a daemon thread; `server.stop()`."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.hits, httpd.files, httpd.stopped = [], {}, False
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"

    def stop():
        if not httpd.stopped:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)
            httpd.stopped = True

    httpd.stop = stop
    yield httpd
    stop()


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """A private, empty KERAS_HOME for one test (downloads and converted weights land here)."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv("KERAS_VTN_OFFLINE", raising=False)
    # A download that stalls fails the test in seconds instead of blocking the suite.
    monkeypatch.setenv("KERAS_VTN_DOWNLOAD_TIMEOUT", "10")
    return home
