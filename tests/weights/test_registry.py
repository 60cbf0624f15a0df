"""The registry data: one source, complete entries, only real download hosts."""

from __future__ import annotations

import json
import os

import keras_vtn
from keras_vtn.weights import find_entry
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
