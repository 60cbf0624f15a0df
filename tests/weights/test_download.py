"""Registry downloads against a real HTTP server on 127.0.0.1 (no external network)."""

from __future__ import annotations

import hashlib
import os
import traceback

import pytest
from weights_helpers import SERVER_PAYLOAD as PAYLOAD

from keras_vtn.weights import (
    NoReleasedWeightsError,
    UnknownWeightsError,
    WeightsDownloadError,
    register,
    resolve,
    unregister,
)
from keras_vtn.weights import list as list_weights

SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def entry_factory():
    added = []

    def make(route: str, sha256: str | None, entry_id: str = "toy/k400", files=None):
        entry = {
            "id": entry_id,
            "name": "k400",
            "family": "toy",
            "match": {},
            "kind": "video",
            "config": {},
            "format": "pytorch",
            "files": files or [{"url": route, "fname": "toy.pth", "sha256": sha256}],
            "cache_dir": "test/toy",
        }
        register(entry)
        added.append(entry_id)
        return entry

    yield make
    for entry_id in added:
        unregister(entry_id)


def _cache_folder(keras_home) -> str:
    return os.path.join(str(keras_home), "keras_vtn", "originals", "test", "toy")


def _leftovers(keras_home) -> list[str]:
    folder = _cache_folder(keras_home)
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.mark.parametrize("known_hash", [True, False])
def test_download_success_then_cache_without_network(
    keras_home, server, entry_factory, monkeypatch, known_hash
):
    from keras_vtn.weights import download

    entry = entry_factory(f"{server.base}/good/toy.pth", SHA if known_hash else None)
    path = download.fetch_entry(entry)
    assert path == os.path.join(_cache_folder(keras_home), "toy.pth")
    assert open(path, "rb").read() == PAYLOAD
    assert download.read_record(path)["sha256"] == SHA  # observed hash recorded in the cache
    assert _leftovers(keras_home) == ["toy.pth", "toy.pth.sha256.json"]
    hits = len(server.hits)
    server.stop()  # the second call must not touch the network
    assert download.fetch_entry(entry) == path
    assert len(server.hits) == hits


def test_cached_file_corrupted_later_is_detected(keras_home, server, entry_factory):
    from keras_vtn.weights import download

    entry = entry_factory(f"{server.base}/good/toy.pth", None)  # unknown upstream hash
    path = download.fetch_entry(entry)
    with open(path, "r+b") as handle:
        handle.write(b"X" * 10)
    os.utime(path, ns=(1, 1))  # size/mtime changed -> rehash -> mismatch with the record
    downloaded = len(server.hits)
    assert download.fetch_entry(entry) == path  # re-downloaded
    assert len(server.hits) == downloaded + 1
    assert open(path, "rb").read() == PAYLOAD


def test_hash_mismatch(keras_home, server, entry_factory):
    from keras_vtn.weights import download

    entry = entry_factory(f"{server.base}/good/toy.pth", "0" * 64)
    with pytest.raises(WeightsDownloadError) as info:
        download.fetch_entry(entry)
    message = str(info.value)
    assert SHA in message and "0" * 64 in message and "discarded" in message
    assert _leftovers(keras_home) == []


@pytest.mark.parametrize("route", ["truncated", "missing"])
def test_failed_download_is_one_clear_error_and_leaves_nothing(
    keras_home, server, entry_factory, route
):
    url = f"{server.base}/{route}/toy.pth"
    entry_factory(url, None)
    with pytest.raises(WeightsDownloadError) as info:
        resolve("k400", "toy")
    message = str(info.value)
    target = os.path.join(_cache_folder(keras_home), "toy.pth")
    assert url in message and target in message and "place it at" in message
    if route == "missing":
        assert "404" in message
    # No partial download anywhere in the cache, so a later run cannot pick one up.
    assert _leftovers(keras_home) == []
    # One error, not a chained urllib traceback.
    assert info.value.__cause__ is None and info.value.__suppress_context__
    shown = "".join(traceback.format_exception(info.value))
    assert "urllib" not in shown and "During handling" not in shown


def test_offline_connection_refused(keras_home, server, entry_factory):
    base = server.base
    server.stop()  # nothing listens on that port any more
    entry_factory(f"{base}/good/toy.pth", None)
    with pytest.raises(WeightsDownloadError, match="download failed") as info:
        resolve("k400", "toy")
    assert "place it at" in str(info.value)
    assert _leftovers(keras_home) == []


def test_offline_real_registry_entry(keras_home, monkeypatch):
    """weights="k400" without network: the real URL, the cache path and how to place it."""
    monkeypatch.setenv("KERAS_VTN_OFFLINE", "1")
    (entry,) = list_weights(family="linear_vtn", name="k400")
    with pytest.raises(WeightsDownloadError) as info:
        resolve("k400", "linear_vtn", size="base")
    message = str(info.value)
    assert entry["files"][0]["url"] in message
    expected = os.path.join(
        str(keras_home), "keras_vtn", "originals", "elb3k", "vtn", "lin-vtn.pth"
    )
    assert expected in message and "curl" in message
    assert info.value.__cause__ is None


def test_hf_entry_downloads_a_folder(keras_home, server, entry_factory):
    from keras_vtn.weights import download

    files = [
        {"url": f"{server.base}/good/config.json", "fname": "config.json", "sha256": SHA},
        {"url": f"{server.base}/good/model.bin", "fname": "pytorch_model.bin", "sha256": None},
    ]
    entry = entry_factory(None, None, entry_id="toy/hf", files=files)
    folder = download.fetch_entry(entry)
    assert folder == _cache_folder(keras_home)
    assert {"config.json", "pytorch_model.bin"} <= set(os.listdir(folder))


def test_registry_errors(keras_home):
    with pytest.raises(NoReleasedWeightsError) as info:
        resolve("k400", "laps", backbone="vit_base")
    assert "no released Kinetics-400 weights" in str(info.value)
    assert "train" in str(info.value).lower()
    with pytest.raises(UnknownWeightsError, match="variant='factorised_self_attention'"):
        resolve("k400", "vivit", variant="factorised_self_attention", size="base")
    with pytest.raises(UnknownWeightsError, match="ambiguous"):
        resolve("k400", "vivit")
    with pytest.raises(UnknownWeightsError, match="no such file"):
        resolve("./nothing.pth", "vivit")
    with pytest.raises(UnknownWeightsError, match="Registered names for vtn"):
        resolve("k700", "vtn")


@pytest.mark.parametrize("value", ["", "0", "false", "False", "no", "off", " OFF "])
def test_offline_variable_set_to_a_false_value_allows_downloads(
    keras_home, server, entry_factory, monkeypatch, value
):
    from keras_vtn.weights import download

    monkeypatch.setenv("KERAS_VTN_OFFLINE", value)
    entry = entry_factory(f"{server.base}/good/toy.pth", SHA)
    assert open(download.fetch_entry(entry), "rb").read() == PAYLOAD


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on"])
def test_offline_variable_set_to_a_true_value_blocks_downloads(
    keras_home, server, entry_factory, monkeypatch, value
):
    from keras_vtn.weights import download

    monkeypatch.setenv("KERAS_VTN_OFFLINE", value)
    entry = entry_factory(f"{server.base}/good/toy.pth", SHA)
    with pytest.raises(WeightsDownloadError, match="downloads are disabled"):
        download.fetch_entry(entry)
    assert server.hits == []


def test_offline_variable_with_an_unrecognised_value_is_a_clear_error(
    keras_home, server, entry_factory, monkeypatch
):
    from keras_vtn.weights import download

    monkeypatch.setenv("KERAS_VTN_OFFLINE", "maybe")
    entry = entry_factory(f"{server.base}/good/toy.pth", SHA)
    with pytest.raises(ValueError) as info:
        download.fetch_entry(entry)
    message = str(info.value)
    assert "KERAS_VTN_OFFLINE" in message and "'maybe'" in message
    for accepted in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        assert accepted in message
    assert server.hits == []


def test_trust_on_first_use_holds_across_re_downloads(keras_home, server, entry_factory):
    """No published hash: the first download's hash is the reference for later downloads too."""
    from keras_vtn.weights import download

    server.files["toy.pth"] = PAYLOAD
    entry = entry_factory(f"{server.base}/files/toy.pth", None)
    path = download.fetch_entry(entry)
    record = path + ".sha256.json"
    # The local copy is damaged and, meanwhile, the file changed upstream.
    server.files["toy.pth"] = b"something else entirely"
    with open(path, "r+b") as handle:
        handle.write(b"X" * 10)
    os.utime(path, ns=(1, 1))
    for _ in range(2):  # refused now and on the next run: the record is kept
        with pytest.raises(WeightsDownloadError) as info:
            download.fetch_entry(entry)
        message = str(info.value)
        assert SHA in message and "first downloaded" in message and record in message
        assert _leftovers(keras_home) == ["toy.pth.sha256.json"]
    os.remove(record)  # the documented way to accept the new upstream file
    assert open(download.fetch_entry(entry), "rb").read() == b"something else entirely"
