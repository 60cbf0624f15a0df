"""The pretrained-weights registry (data in `registry.json`).

An entry names its model family by a string; what a family is (builder, converter) is known
only to the model package, never here.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from typing import Any

from keras_vtn.weights.errors import (
    NoReleasedWeightsError,
    UnknownWeightsError,
)

REGISTRY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "registry.json")
_REQUIRED = ("id", "name", "family", "match", "kind", "config", "format", "files", "cache_dir")
# A file without a published hash says so with `"trust": "first-use"`: its first download's
# sha256 is recorded in the cache and every later use is checked against that record.
TRUST_FIRST_USE = "first-use"
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
# Width-splitting head counts: heads x head_dim must equal the width they split.
_HEAD_KEYS = ("num_heads", "num_spatial_heads")

@functools.lru_cache(maxsize=1)
def _load_file() -> dict:
    with open(REGISTRY_PATH, encoding="utf-8") as handle:
        data = json.load(handle)
    for entry in data["entries"]:
        _validate(entry, shipped=True)
    return data


_EXTRA_ENTRIES: list[dict] = []


def _validate(entry: dict, shipped: bool = False) -> None:
    missing = [key for key in _REQUIRED if key not in entry]
    if missing:
        raise ValueError(f"registry entry {entry.get('id')!r} lacks {missing}.")
    if not entry["files"] or not all("url" in f and "fname" in f for f in entry["files"]):
        raise ValueError(f"registry entry {entry['id']!r} needs files with url and fname.")
    for item in entry["files"]:
        if os.path.basename(item["fname"]) != item["fname"] or item["fname"] in ("", ".", ".."):
            raise ValueError(f"registry entry {entry['id']!r}: bad file name {item['fname']!r}.")
        _validate_hash(entry["id"], item, shipped)
    parts = entry["cache_dir"].split("/")
    if entry["cache_dir"].startswith("/") or ".." in parts or "\\" in entry["cache_dir"]:
        raise ValueError(f"registry entry {entry['id']!r}: cache_dir must be relative.")
    _validate_config(entry)


def _validate_hash(entry_id: str, item: dict, shipped: bool) -> None:
    sha256, trust = item.get("sha256"), item.get("trust")
    where = f"registry entry {entry_id!r}, file {item['fname']!r}"
    if sha256 is not None and not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
        raise ValueError(f"{where}: sha256 must be 64 hexadecimal digits or null, not {sha256!r}.")
    if trust is not None and trust != TRUST_FIRST_USE:
        raise ValueError(f"{where}: trust must be {TRUST_FIRST_USE!r} (or absent), not {trust!r}.")
    if sha256 is not None and trust is not None:
        raise ValueError(
            f"{where}: has a sha256 and trust={trust!r}; a pinned file is checked against its "
            "sha256, so drop the trust field."
        )
    if shipped and sha256 is None and trust is None:
        raise ValueError(
            f"{where}: no sha256; add the published one, or mark the file "
            f'"trust": "{TRUST_FIRST_USE}" so it is listed as trust-on-first-use.'
        )


def _validate_config(entry: dict) -> None:
    """An entry's config is used as written, so it must not contradict itself."""
    config, where = entry["config"], f"registry entry {entry['id']!r}"
    for key, value in entry["match"].items():
        if key in config and config[key] != value:
            raise ValueError(
                f"{where}: config {key}={config[key]!r} contradicts match {key}={value!r}."
            )
    width = config.get("hidden_dim")
    for key in _HEAD_KEYS:
        heads = config.get(key)
        if heads is None or width is None:
            continue
        if not isinstance(heads, int) or heads < 1 or width % heads:
            raise ValueError(
                f"{where}: config {key}={heads!r} does not divide hidden_dim={width!r} into "
                "equal heads."
            )


def _entries() -> list[dict]:
    return _load_file()["entries"] + _EXTRA_ENTRIES


def register(entry: dict) -> None:
    """Add an entry at runtime (your own released weights, or a test server).

    The entry has the fields of `registry.json` entries; its `id` must be new.
    """
    _validate(entry)
    if any(e["id"] == entry["id"] for e in _entries()):
        raise ValueError(f"a registry entry with id {entry['id']!r} already exists.")
    _EXTRA_ENTRIES.append(copy.deepcopy(entry))


def unregister(entry_id: str) -> None:
    """Remove an entry added with `register`."""
    _EXTRA_ENTRIES[:] = [e for e in _EXTRA_ENTRIES if e["id"] != entry_id]


def list_weights(family: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
    """All registry entries (deep copies), optionally filtered by family and/or name.

    Example:

    >>> import keras_vtn
    >>> [e["id"] for e in keras_vtn.weights.list(family="vtn")]
    ['vtn/k400']
    """
    return [
        copy.deepcopy(e)
        for e in _entries()
        if (family is None or e["family"] == family) and (name is None or e["name"] == name)
    ]


def unavailable_message(family: str, name: str) -> str | None:
    """The explanation for weights that were never released, or None."""
    for item in _load_file().get("unavailable", []):
        if item["family"] == family and item["name"] == name:
            return item["message"]
    return None


def is_registry_name(name: str, family: str | None = None) -> bool:
    return any(
        e["name"] == name and (family is None or e["family"] == family) for e in _entries()
    ) or any(
        u["name"] == name and (family is None or u["family"] == family)
        for u in _load_file().get("unavailable", [])
    )


def _describe(entry: dict) -> str:
    keys = ", ".join(f"{k}={v!r}" for k, v in entry["match"].items())
    return f"{entry['id']} ({keys})" if keys else entry["id"]


def find_entry(name: str, family: str, **match: Any) -> dict[str, Any]:
    """The registry entry called `name` for `family` whose `match` fields agree with `match`.

    `match` holds builder arguments (e.g. `variant="factorised_encoder", size="large"`); an entry
    is rejected when one of its own `match` fields disagrees with a given (non-None) value.
    """
    message = unavailable_message(family, name)
    if message:
        raise NoReleasedWeightsError(message)
    named = [e for e in _entries() if e["family"] == family and e["name"] == name]
    if not named:
        names = sorted({e["name"] for e in _entries() if e["family"] == family})
        raise UnknownWeightsError(
            f"weights={name!r} is neither a file nor a registered {family} checkpoint. "
            f"Registered names for {family}: {names or 'none'}; or pass the path of a "
            ".weights.h5/.keras file or of an original checkpoint."
        )
    given = {k: v for k, v in match.items() if v is not None}
    fits = [
        e for e in named if all(given.get(k, v) == v for k, v in e["match"].items())
    ]
    if len(fits) == 1:
        return copy.deepcopy(fits[0])
    options = "; ".join(_describe(e) for e in named)
    if not fits:
        asked = ", ".join(f"{k}={v!r}" for k, v in given.items())
        raise UnknownWeightsError(
            f"no {family} weights named {name!r} for {asked}. Available {name!r} checkpoints: "
            f"{options}. Choose one of those configurations or train your own."
        )
    raise UnknownWeightsError(
        f"weights={name!r} is ambiguous for {family}: {options}. Pass the distinguishing "
        "builder arguments (e.g. variant=..., size=...)."
    )
