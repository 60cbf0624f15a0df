"""The registry data: one source, complete entries, only real download hosts."""

from __future__ import annotations

import copy
import json
import os
import re

import keras
import numpy as np
import pytest

import keras_vtn
from keras_vtn.weights import find_entry, read_checkpoint, register, unregister
from keras_vtn.weights.registry import REGISTRY_PATH

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Hosts the specs name as real download locations of the original checkpoints.
KNOWN_HOSTS = (
    "https://storage.googleapis.com/scenic-bucket/vivit/",
    "https://storage.googleapis.com/vit_models/imagenet21k/",
    "https://huggingface.co/google/vivit-b-16x2-kinetics400/resolve/main/",
    "https://github.com/elb3k/vtn/releases/download/weights/",
    "https://researchpublic.blob.core.windows.net/vtn/",
)


def test_top_level_registry_is_the_package_file():
    top = os.path.join(ROOT, "weights", "registry.json")
    assert os.path.realpath(top) == os.path.realpath(REGISTRY_PATH)
    assert json.load(open(top)) == json.load(open(REGISTRY_PATH))


def test_entries_are_complete():
    entries = keras_vtn.weights.list()
    assert len({e["id"] for e in entries}) == len(entries)
    keys = {(e["family"], e["name"], json.dumps(e["match"], sort_keys=True)) for e in entries}
    assert len(keys) == len(entries)  # every (family, name, match) resolves to one entry
    for entry in entries:
        for item in entry["files"]:
            assert item["url"].startswith(KNOWN_HOSTS), item["url"]
        assert {"mean", "std"} <= set(entry["preprocessing"])
        assert entry["license"] and entry["label_map"] and entry["config"]
        if entry["kind"] == "video":
            assert entry["reported"]["top1"] and entry["reported"]["views"]
            assert entry["eval_views"]["crops"] and entry["config"]["num_classes"] in (400, 600)


def test_issue_entries_present():
    ids = {e["id"] for e in keras_vtn.weights.list()}
    assert {
        "linear_vtn/k400",
        "linear_vtn/k400_miil21k",
        "vtn/k400",
        "vivit/k400/spatio_temporal-base",
        "vivit/k400/spatio_temporal-base-hf",
        "vivit/k400/factorised_encoder-base",
        "vivit/k400/factorised_encoder-large",
        "vivit/k600/factorised_encoder-large",
        "vivit/imagenet21k/base",
        "vivit/imagenet21k/large",
    } <= ids
    assert not [e for e in keras_vtn.weights.list(family="laps") if e["name"] == "k400"]
    vtn = find_entry("k400", "vtn")
    assert vtn["files"][0]["sha256"] == (
        "779682d33e7afc32c3eff910e151eab30e7aed375acf7743cfe3041a83dcbf3a"
    )
    assert find_entry("k400", "vivit", variant="factorised_encoder", size="large")["id"] == (
        "vivit/k400/factorised_encoder-large"
    )


def test_list_returns_copies():
    first = keras_vtn.weights.list(family="vtn")[0]
    first["name"] = "changed"
    assert keras_vtn.weights.list(family="vtn")[0]["name"] == "k400"
    assert list((1, 2)) == [1, 2]  # the builtin is untouched outside keras_vtn.weights


def test_every_file_is_pinned_by_sha256_or_marked_trust_on_first_use():
    """A file without a published hash must say so: nobody can mistake it for a pinned one."""
    for entry in keras_vtn.weights.list():
        for item in entry["files"]:
            where = (entry["id"], item["fname"])
            if item["sha256"] is None:
                assert item.get("trust") == "first-use", where
            else:
                assert re.fullmatch(r"[0-9a-f]{64}", item["sha256"]), where
                assert "trust" not in item, where


VTN_FIXTURES = os.path.join(ROOT, "tests", "fixtures", "vtn")
# family -> (fixture checkpoint, head counts it was made with, extra config, mean/std)
TINY = {
    "linear_vtn": ("lin_vtn.pth", {"num_spatial_heads": 2}, {}, (0.5, 0.5)),
    "vtn": (
        "vtn.pyth",
        {"num_spatial_heads": 2, "num_temporal_heads": 2},
        {"attention_window": 4},
        (0.45, 0.225),
    ),
}


def _tiny_entry(family: str, url: str, **config) -> dict:
    """A registry entry for a tiny fixture checkpoint (hidden_dim 32, not 768)."""
    from keras_vtn.models import linear_vtn_convert, vtn_convert

    fname, _, extra, (mean, std) = TINY[family]
    reader = {"linear_vtn": linear_vtn_convert, "vtn": vtn_convert}[family]
    found = reader.config_from_checkpoint(read_checkpoint(os.path.join(VTN_FIXTURES, fname)))
    found.update(size="base", num_classes=5, **extra, **config)
    return {
        "id": f"{family}/tiny_registered",
        "name": "tiny_registered",
        "family": family,
        "match": {"size": "base"},
        "kind": "video",
        "config": found,
        "format": "pytorch",
        "files": [{"url": url, "fname": fname, "sha256": None}],
        "cache_dir": f"test/tiny_registered/{family}",
        "preprocessing": {"mean": [mean] * 3, "std": [std] * 3},
    }


def _build_registered(family: str, **kwargs):
    from keras_vtn.models.linear_vtn import LinearVTN
    from keras_vtn.models.vtn import VTN

    if family == "vtn":
        return VTN(weights="tiny_registered", num_frames=10, frame_indices=True, **kwargs)
    return LinearVTN(weights="tiny_registered", **kwargs)


def _fixture_logits(family: str, model) -> tuple[np.ndarray, np.ndarray]:
    def load(name):
        return np.load(os.path.join(VTN_FIXTURES, name))

    if family == "vtn":
        inputs = {
            "frames": load("vtn_input.npy").astype("float32"),
            "frame_indices": load("vtn_frame_indices_dense.npy"),
        }
        expected = load("vtn_logits_dense.npy")
    else:
        inputs, expected = load("lin_vtn_input.npy").astype("float32"), load("lin_vtn_logits.npy")
    return np.asarray(keras.ops.convert_to_numpy(model(inputs))), expected


@pytest.fixture
def registered(keras_home, server):
    """Registers the tiny entry of a family, served by the 127.0.0.1 test server."""
    added = []

    def make(family: str, **config) -> dict:
        fname = TINY[family][0]
        with open(os.path.join(VTN_FIXTURES, fname), "rb") as handle:
            server.files[fname] = handle.read()
        entry = _tiny_entry(family, f"{server.base}/files/{fname}", **config)
        register(entry)
        added.append(entry["id"])
        return entry

    yield make
    for entry_id in added:
        unregister(entry_id)


@pytest.mark.parametrize("family", sorted(TINY))
def test_registered_entry_head_counts_win_over_the_derived_default(registered, family):
    """hidden_dim 32 is not 768: the derived 64-wide default would give 1 head; the entry
    says 2 (what the checkpoint was trained with), and the entry must win."""
    entry = registered(family, **TINY[family][1])
    assert entry["config"]["hidden_dim"] != 768
    logits, expected = _fixture_logits(family, _build_registered(family, num_classes=5))
    tolerance = 2e-5 if keras.backend.backend() == "tensorflow" else 1e-4
    assert np.abs(logits - expected).max() <= tolerance


@pytest.mark.parametrize("family", sorted(TINY))
def test_builder_argument_contradicting_a_registered_entry_is_an_error(registered, family):
    registered(family, **TINY[family][1])
    with pytest.raises(ValueError, match="num_spatial_heads=1 conflicts"):
        _build_registered(family, num_classes=5, num_spatial_heads=1)


@pytest.mark.parametrize(
    "config, fragment",
    [
        ({"hidden_dim": 32, "num_spatial_heads": 3}, "num_spatial_heads"),
        ({"hidden_dim": 32, "num_heads": 5}, "num_heads"),
        ({"size": "large"}, "size"),
    ],
)
def test_register_refuses_a_self_contradictory_entry(config, fragment):
    entry = _tiny_entry("linear_vtn", "http://127.0.0.1:9/none.pth")
    entry["config"] = dict(entry["config"], **config)
    try:
        with pytest.raises(ValueError, match=fragment) as info:
            register(copy.deepcopy(entry))
    finally:
        unregister(entry["id"])  # only matters if the refusal failed
    assert entry["id"] in str(info.value)


@pytest.mark.parametrize(
    "item, fragment",
    [
        ({"sha256": "abc"}, "sha256"),
        ({"sha256": None, "trust": "always"}, "trust"),
        ({"sha256": "0" * 64, "trust": "first-use"}, "trust"),
    ],
)
def test_register_refuses_a_malformed_hash_or_trust(item, fragment):
    entry = _tiny_entry("linear_vtn", "http://127.0.0.1:9/none.pth")
    entry["files"][0] = dict(entry["files"][0], **item)
    try:
        with pytest.raises(ValueError, match=fragment) as info:
            register(entry)
    finally:
        unregister(entry["id"])  # only matters if the refusal failed
    assert entry["id"] in str(info.value)
