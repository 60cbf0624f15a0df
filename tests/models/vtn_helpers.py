"""Shared pieces of the LinearVTN / VTN model tests (fixtures made by the original code)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vtn"

# The tiny configurations the fixtures were generated with (tests/fixtures/vtn/README.md).
TINY_VIT = dict(patch_size=8, num_spatial_heads=2, image_size=32)
TINY_LINEAR_VTN = dict(TINY_VIT, num_classes=5)
TINY_VTN = dict(TINY_VIT, num_temporal_heads=2, attention_window=4, num_classes=5)


def parity_tolerance() -> float:
    """The project's bar: 2e-5 on TensorFlow, 1e-4 on JAX and PyTorch (float32 CPU)."""
    return 2e-5 if keras.backend.backend() == "tensorflow" else 1e-4


def to_numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def fixture(name: str) -> np.ndarray:
    return np.load(FIXTURES / name)


def pixels(name: str) -> np.ndarray:
    """Stored uint8 RGB clips as the float [0, 255] input the models take."""
    return fixture(name).astype("float32")
