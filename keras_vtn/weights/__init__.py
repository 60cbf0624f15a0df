"""Pretrained weights: torch-free readers of the original checkpoints, registry, loading.

```python
import keras_vtn
keras_vtn.weights.list(family="linear_vtn")           # registry entries
state = keras_vtn.weights.read_checkpoint("lin-vtn.pth")  # {name: numpy array}, no torch
```
"""

from keras_vtn.weights.errors import (
    CheckpointError,
    CheckpointLimitError,
    CheckpointNotFoundError,
    FamilyNotAvailableError,
    NoReleasedWeightsError,
    UnknownWeightsError,
    UnsafeCheckpointError,
    WeightsDownloadError,
)
from keras_vtn.weights.loading import (
    AssignReport,
    WeightsSource,
    assign_weights,
    load_source,
    load_weights,
    resolve,
)
from keras_vtn.weights.readers import read_checkpoint, sniff_format
from keras_vtn.weights.registry import find_entry, register, unregister

# `keras_vtn.weights.list()` is the public name. Binding it here shadows the builtin `list`
# only inside this module's namespace, which contains no code that needs the builtin.
from keras_vtn.weights.registry import list_weights as list  # noqa: A001

__all__ = [
    "AssignReport",
    "CheckpointError",
    "CheckpointLimitError",
    "CheckpointNotFoundError",
    "FamilyNotAvailableError",
    "NoReleasedWeightsError",
    "UnknownWeightsError",
    "UnsafeCheckpointError",
    "WeightsDownloadError",
    "WeightsSource",
    "assign_weights",
    "find_entry",
    "list",
    "load_source",
    "load_weights",
    "read_checkpoint",
    "register",
    "resolve",
    "sniff_format",
    "unregister",
]
