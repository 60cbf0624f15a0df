"""The `>>>` examples in the training, evaluation and motion-dataset modules run as written."""

import doctest
import importlib

import pytest

MODULES = [
    "keras_vtn.training.optimizers",
    "keras_vtn.training.schedules",
    "keras_vtn.training.losses",
    "keras_vtn.training.presets",
    "keras_vtn.evaluation",
    "keras_vtn.protocol",
    "keras_vtn.data.synthetic",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
