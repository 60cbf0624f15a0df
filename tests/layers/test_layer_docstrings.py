"""Every public layer carries a docstring example, and every example runs."""

import doctest
import importlib
import pkgutil

import pytest

import keras_vtn.layers

MODULES = [
    importlib.import_module(f"keras_vtn.layers.{info.name}")
    for info in pkgutil.iter_modules(keras_vtn.layers.__path__)
]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


@pytest.mark.parametrize("name", keras_vtn.layers.__all__)
def test_every_public_layer_has_an_example(name):
    obj = getattr(keras_vtn.layers, name)
    assert obj.__doc__ and ">>>" in obj.__doc__, f"{name} needs a runnable docstring example"
