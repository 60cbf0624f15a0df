"""Atomic writes: the target changes in one step or not at all."""

from __future__ import annotations

import json
import os

import pytest

from keras_vtn.io_utils import atomic_path, write_json, write_text


def test_write_replaces_the_target_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "result.json"
    write_json(target, {"a": 1}, indent=1)
    write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    write_text(tmp_path / "labels.txt", "x\ny\n")
    assert (tmp_path / "labels.txt").read_text() == "x\ny\n"
    assert sorted(os.listdir(tmp_path / "sub")) == ["result.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.weights.h5"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target, suffix=".h5") as tmp:
        assert tmp.endswith(".h5") and os.path.basename(tmp).startswith(".")
        with open(tmp, "w") as f:
            f.write("half of the new")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["model.weights.h5"]


def test_docstring_example_runs():
    import doctest

    from keras_vtn import io_utils

    result = doctest.testmod(io_utils)
    assert result.attempted and not result.failed
