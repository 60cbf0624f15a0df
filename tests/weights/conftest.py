"""Shared helpers for the weights tests."""

from __future__ import annotations

import os

import msgpack
import numpy as np
import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "weights")


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """A private, empty KERAS_HOME for one test (downloads and converted weights land here)."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv("KERAS_VTN_OFFLINE", raising=False)
    return home


def flax_msgpack_bytes(tree) -> bytes:
    """Serialise a state dict exactly as `flax.serialization.msgpack_serialize` does.

    flax encodes numpy arrays as msgpack ExtType 1 whose payload is
    `msgpack.packb((shape, dtype.name, C-order bytes), use_bin_type=True)`, numpy scalars as
    ExtType 3 with the same payload, and packs the tree with `strict_types=True`.
    """

    def ext(value):
        if isinstance(value, np.ndarray):
            payload = msgpack.packb(
                (value.shape, value.dtype.name, value.tobytes("C")), use_bin_type=True
            )
            return msgpack.ExtType(1, payload)
        if isinstance(value, np.generic):
            array = np.asarray(value)
            payload = msgpack.packb(
                (array.shape, array.dtype.name, array.tobytes("C")), use_bin_type=True
            )
            return msgpack.ExtType(3, payload)
        raise TypeError(type(value))

    return msgpack.packb(tree, default=ext, strict_types=True)
