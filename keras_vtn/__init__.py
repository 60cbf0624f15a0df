"""keras_vtn: efficient video transformers for Keras 3.

```python
import keras_vtn
model = keras_vtn.ViViT(variant="factorised_encoder", weights=None, num_frames=8, image_size=32)
```

A saved `.keras` model holds keras_vtn's layers by their registered names, so Keras can load it
only once `import keras_vtn` has registered them; `keras_vtn.load_model(path)` does both.
"""

import os as _os
import sys as _sys

from keras_vtn import cli as _cli

# The command line quiets TensorFlow's start-up log, which it can do only before TensorFlow
# loads -- and every `keras_vtn.*` import runs this file first. A Python user's import leaves
# TensorFlow's logging alone.
if _cli.is_command_line_process() and "--debug" not in _sys.orig_argv:
    _cli.quiet_tensorflow_startup()

from keras_vtn import layers, weights  # noqa: E402
from keras_vtn.evaluation import evaluate_views  # noqa: E402
from keras_vtn.models.laps import LAPSTransformer  # noqa: E402
from keras_vtn.models.linear_vtn import LinearVTN  # noqa: E402
from keras_vtn.models.vivit import ViViT  # noqa: E402
from keras_vtn.models.vtn import VTN  # noqa: E402
from keras_vtn.prediction import predict_video  # noqa: E402

__version__ = "0.1.0"



def load_model(path, *, compile: bool = False, **builder_kwargs):
    """A model saved by keras_vtn: a `.keras` file, or `keras-vtn convert`'s `.weights.h5`.

    `.keras`: `keras.saving.load_model` once this package's layers are registered (they are,
    by this module's import), in Keras' safe mode. `.weights.h5`: the weights alone do not say
    which architecture they fit, so `keras-vtn convert` writes it beside them as
    `<name>.config.json` (family and builder arguments); the family's builder rebuilds the model
    from it and loads the weights. `builder_kwargs` override the recorded arguments (e.g.
    `include_top=False`); the clip size is fixed by the saved position tables -- convert with
    `--model-arg num_frames=N --model-arg image_size=S` for another one.

    Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.keras")
    >>> LAPSTransformer("vit_base", num_frames=4, image_size=32, patch_size=16, hidden_dim=32,
    ...     num_layers=2, num_heads=2, mlp_dim=64, num_classes=5).save(path)
    >>> load_model(path).output_shape
    (None, 5)
    """
    import keras

    from keras_vtn.weights import registry
    from keras_vtn.weights.cli import read_model_config

    path = _os.fspath(path)
    if path.endswith(".keras"):
        if builder_kwargs:
            raise ValueError(f"{path!r} is a whole saved model; builder arguments "
                             f"({', '.join(sorted(builder_kwargs))}) apply to .weights.h5 files.")
        if not _os.path.exists(path):
            raise FileNotFoundError(2, "No saved model", path)
        return keras.saving.load_model(path, compile=compile)
    if not path.endswith(".weights.h5"):
        raise ValueError(f"{path!r}: give a .keras model or a .weights.h5 file converted by "
                         "`keras-vtn convert` (an original checkpoint goes to a builder's "
                         "weights=, e.g. keras_vtn.ViViT(weights=PATH)).")
    family, config = read_model_config(path)
    builder = registry.family_function(family, "builder")
    return builder(weights=path, **{**config, **builder_kwargs})


__all__ = [
    "LAPSTransformer",
    "LinearVTN",
    "VTN",
    "ViViT",
    "evaluate_views",
    "layers",
    "load_model",
    "predict_video",
    "weights",
    "__version__",
]
