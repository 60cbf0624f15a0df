"""Suite-wide pytest setup: dtype-policy hygiene and the slow-test budget.

Helpers that tests import live in `layer_checks.py` (a module named `conftest` is ambiguous:
several folders have one).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

_slow_seconds = 0.0


def pytest_runtest_setup(item):
    """`make test` runs slow tests on a time budget: past it, the rest are skipped (and say so)."""
    budget = os.environ.get("KERAS_VTN_SLOW_BUDGET_S")
    if budget and item.get_closest_marker("slow") and _slow_seconds > float(budget):
        pytest.skip(f"slow-test budget of {budget} s spent; run `make test-slow` for all of them")


def pytest_runtest_logreport(report):
    global _slow_seconds
    if "slow" in report.keywords:
        _slow_seconds += report.duration


@pytest.fixture(autouse=True)
def _float32_policy():
    """Every test starts and ends in float32, whatever a mixed-precision test set."""
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
