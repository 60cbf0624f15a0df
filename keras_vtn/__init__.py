"""keras_vtn: efficient video transformers for Keras 3.

```python
import keras_vtn
model = keras_vtn.ViViT(variant="factorised_encoder", weights=None, num_frames=8, image_size=32)
```

A saved `.keras` model holds keras_vtn's layers by their registered names, so Keras can load it
only once `import keras_vtn` has registered them; `keras_vtn.load_model(path)` does both.
"""

import contextlib as _contextlib
import os as _os
import re as _re
import sys as _sys
import tempfile as _tempfile

# TensorFlow >= 2.19 logs through absl before it reads TF_CPP_MIN_LOG_LEVEL, so the variable
# cannot hide the lines printed while it loads (tensorflow/tensorflow#100442), and the CUDA
# probe on a machine without an NVIDIA driver logs at ERROR level ("failed call to cuInit"),
# which only level 3 hides -- together with every real error. So the command line loads
# TensorFlow and probes its devices with stderr captured, then prints back every captured line
# except these known, harmless ones.
_NOISE = [
    _re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called"),
    _re.compile(r"^I\d{4} .*\bport\.cc:\d+\] oneDNN custom operations are on"),
    _re.compile(r"^I\d{4} .*\bcudart_stub\.cc:\d+\] Could not find cuda drivers"),
    _re.compile(r"^I\d{4} .*\bcpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"),
    _re.compile(r"^To enable the following instructions: .* rebuild TensorFlow with the"),
]
# Without an NVIDIA kernel driver no GPU can work, so this failure says nothing new; with one,
# it explains why the GPU is not used and is kept.
_CUINIT = _re.compile(r"^E\d{4} .*\] failed call to cuInit")


def _is_noise(line: str, has_nvidia_driver: bool) -> bool:
    if any(pattern.search(line) for pattern in _NOISE):
        return True
    return not has_nvidia_driver and bool(_CUINIT.search(line))


def _filter_startup_log(text: str, has_nvidia_driver: bool | None = None) -> str:
    """`text` without TensorFlow's known start-up noise lines (every other line is kept)."""
    if has_nvidia_driver is None:
        has_nvidia_driver = _os.path.exists("/proc/driver/nvidia")
    kept = [line for line in text.splitlines(keepends=True)
            if not _is_noise(line, has_nvidia_driver)]
    return "".join(kept)


@_contextlib.contextmanager
def _stderr_filtered():
    """Captures file descriptor 2 (C++ logs bypass `sys.stderr`); replays it filtered."""
    try:
        _sys.stderr.flush()
        saved = _os.dup(2)
    except (OSError, ValueError):  # no usable stderr (e.g. closed): nothing to protect
        yield
        return
    with _tempfile.TemporaryFile() as captured:
        _os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            with _contextlib.suppress(OSError, ValueError):
                _sys.stderr.flush()
            _os.dup2(saved, 2)
            _os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = _filter_startup_log(text)
            if kept:
                _sys.stderr.write(kept)
                _sys.stderr.flush()


def _quiet_tensorflow_startup() -> None:
    """Loads TensorFlow and initialises its devices without the start-up noise.

    Called below before anything imports TensorFlow, only when the process is the command
    line: Python users keep TensorFlow's logging as TensorFlow configures it.
    """
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_filtered():
        try:
            import tensorflow as tf
        except ImportError:  # another backend without TensorFlow: no TensorFlow noise either
            return
        # The CUDA probe (and its cuInit message) runs on the first device query; do it here.
        tf.config.list_physical_devices()


def _is_command_line_process(argv: list[str] | None = None) -> bool:
    """Whether this process is `keras-vtn ...` or `python -m keras_vtn.cli|keras_vtn.demo`."""
    argv = list(_sys.orig_argv if argv is None else argv)
    if any(_os.path.basename(arg) in ("keras-vtn", "keras-vtn.exe") for arg in argv[:2]):
        return True
    return any(a == "-m" and b in ("keras_vtn.cli", "keras_vtn.demo")
               for a, b in zip(argv, argv[1:], strict=False))


# The command line quiets TensorFlow's start-up log, which it can do only before TensorFlow
# loads -- and every `keras_vtn.*` import runs this file first. A Python user's import leaves
# TensorFlow's logging alone.
if _is_command_line_process() and "--debug" not in _sys.orig_argv:
    _quiet_tensorflow_startup()

from keras_vtn import layers, weights  # noqa: E402
from keras_vtn.classifier import VideoClassifier  # noqa: E402
from keras_vtn.evaluation import evaluate_views  # noqa: E402
from keras_vtn.models.laps import LAPSTransformer  # noqa: E402
from keras_vtn.models.linear_vtn import LinearVTN  # noqa: E402
from keras_vtn.models.pipeline import model_config  # noqa: E402
from keras_vtn.models.vivit import ViViT  # noqa: E402
from keras_vtn.models.vtn import VTN  # noqa: E402
from keras_vtn.prediction import predict_video  # noqa: E402
from keras_vtn.preprocessing import VideoPreprocessor  # noqa: E402

__version__ = "0.1.0"


def __getattr__(name: str):
    # `presets` and `from_preset` load keras_vtn.preset_utils on first use, so that
    # `python -m keras_vtn.preset_utils` runs a module the package has not imported yet.
    if name in ("presets", "from_preset"):
        from keras_vtn import preset_utils

        return getattr(preset_utils, name)
    raise AttributeError(f"module 'keras_vtn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "presets", "from_preset"])


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

    from keras_vtn.convert import read_model_config
    from keras_vtn.models.families import get_builder

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
    return get_builder(family)(weights=path, **{**config, **builder_kwargs})


__all__ = [
    "LAPSTransformer",
    "LinearVTN",
    "VTN",
    "ViViT",
    "VideoClassifier",
    "VideoPreprocessor",
    "evaluate_views",
    "from_preset",
    "layers",
    "load_model",
    "model_config",
    "predict_video",
    "presets",
    "weights",
    "__version__",
]
