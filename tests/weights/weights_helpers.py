"""Helpers shared by the weights tests (a uniquely named module, unlike conftest)."""

from __future__ import annotations

import os

import msgpack
import numpy as np

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "weights")
SERVER_PAYLOAD = os.urandom(200_000)


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
