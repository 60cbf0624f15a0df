"""Exports a model to SavedModel, ONNX or LiteRT: `export_model` and `keras-vtn export`.

Routes, by format and Keras backend:

- `"savedmodel"`: Keras' `model.export(format="tf_saved_model")` (TensorFlow backend; JAX's
  jax2tf route embeds StableHLO that a TensorFlow of another release may not read back).
- `"onnx"`: TensorFlow backend: Keras' export through tf2onnx; PyTorch backend: the
  `torch.export` (dynamo) ONNX exporter with a dynamic batch axis.
- `"litert"`: TensorFlow backend: the TFLite converter with builtin ops only, so the file
  runs in the plain LiteRT interpreter (no Flex delegate, no TensorFlow at run time).

`keras-vtn export` (`keras_vtn.cli.export`) runs a format its backend cannot make under the
TensorFlow backend (a `.keras` file does not depend on the backend it was saved from).

Example:
>>> import tempfile, os, keras_vtn
>>> model = keras_vtn.ViViT("spatio_temporal", hidden_dim=32, num_heads=2, mlp_dim=64,
...     num_layers=1, num_frames=4, image_size=32, tubelet_size=(2, 16, 16), num_classes=3)
>>> out = export_model(model, os.path.join(tempfile.mkdtemp(), "vivit"), "savedmodel")
>>> os.path.isdir(out)
True
"""

from __future__ import annotations

import logging
import os
import warnings

FORMATS = ("savedmodel", "onnx", "litert")
# Backends that build each format here (the first is the command line's fallback).
ROUTES = {
    "savedmodel": ("tensorflow",),
    "onnx": ("tensorflow", "torch"),
    "litert": ("tensorflow",),
}
_INSTALL_HINT = "pip install 'keras-vtn[export]'"


class ExportError(RuntimeError):
    """The model cannot be exported to this format (with this backend or these packages)."""


def export_model(model, path: str, format: str = "savedmodel", *, verbose: bool = False) -> str:
    """Writes `model` to `path` as `format` (`"savedmodel"`, `"onnx"` or `"litert"`).

    The artifact takes the model's inputs with any batch size and returns its outputs
    (float32 logits for the classifiers). `path` is a folder for SavedModel, a file for
    ONNX, and a file ending in `.tflite` for LiteRT. Returns `path`.

    >>> import tempfile, os, keras_vtn
    >>> model = keras_vtn.LAPSTransformer("vit_base", num_frames=4, image_size=32,
    ...     patch_size=16, hidden_dim=32, num_layers=2, num_heads=2, mlp_dim=64, num_classes=3)
    >>> path = export_model(model, os.path.join(tempfile.mkdtemp(), "laps"), "savedmodel")
    """
    import keras

    if format not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}; use one of {FORMATS}.")
    backend = keras.backend.backend()
    if backend not in ROUTES[format]:
        raise ExportError(
            f"{format} export needs the {' or '.join(ROUTES[format])} backend, not {backend}; "
            f"set KERAS_BACKEND={ROUTES[format][0]} (`keras-vtn export` does it by itself)."
        )
    path = os.fspath(path)
    if format == "savedmodel":
        model.export(path, format="tf_saved_model", verbose=verbose)
    elif format == "litert":
        if not path.endswith(".tflite"):
            raise ValueError(f"A LiteRT file must end with .tflite, got {path!r}.")
        _export_litert(model, path, verbose)
    elif backend == "torch":
        _export_onnx_torch(model, path)
    else:
        _require("tf2onnx", "ONNX export on the TensorFlow backend")
        # Keras' ONNX route reads the signature only from a model that was called once; one
        # fresh from a .keras file was not, so the signature is given from its inputs.
        signature = [
            keras.tree.map_structure(
                lambda x: keras.InputSpec(shape=x.shape, dtype=x.dtype), model._inputs_struct
            )
        ]
        # tf2onnx logs a traceback when one of its optional graph optimisers gives up (its
        # einsum optimiser cannot read '...' equations); the graph is kept as it was, correct.
        optimizer_log = logging.getLogger("tf2onnx.optimizer")
        level = optimizer_log.level
        if not verbose:
            optimizer_log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                # Keras' tf2onnx shim probes `np.object`, which NumPy 2 warns about.
                warnings.simplefilter("ignore", FutureWarning)
                model.export(path, format="onnx", verbose=verbose, input_signature=signature)
        finally:
            optimizer_log.setLevel(level)
    return path


def _require(module: str, purpose: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ExportError(f"{purpose} needs the {module} package: {_INSTALL_HINT}.")


def _export_litert(model, path: str, verbose: bool) -> None:
    import tensorflow as tf

    try:
        # Builtin ops only: Flex (SELECT_TF_OPS) kernels are missing from the standalone
        # LiteRT runtime, where such a file would load and then fail.
        model.export(
            path,
            format="litert",
            verbose=verbose,
            target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]},
        )
    except Exception as err:  # the converter raises its own ConverterError type
        ops = sorted({line.split("'")[1] for line in str(err).splitlines() if "'tf." in line})
        raise ExportError(
            "the model needs TensorFlow ops that LiteRT has no builtin kernel for"
            + (f" ({', '.join(ops)})" if ops else "")
            + "."
        ) from err


def _export_onnx_torch(model, path: str) -> None:
    import keras
    import torch

    _require("onnxscript", "ONNX export on the PyTorch backend")
    inputs = model.input if isinstance(model.input, dict) else {"video": model.input}
    names = list(inputs)

    class Wrapper(torch.nn.Module):
        """Named positional inputs: torch.export maps dynamic axes by argument name."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            values = dict(zip(names, args, strict=True))
            return self.model(values if isinstance(model.input, dict) else args[0], training=False)

    def sample(tensor):
        dtype = getattr(torch, keras.backend.standardize_dtype(tensor.dtype))
        return torch.zeros([2 if s is None else s for s in tensor.shape], dtype=dtype)

    batch = torch.export.Dim("batch")
    args = tuple(sample(inputs[name]) for name in names)
    model.eval()
    program = torch.onnx.export(
        Wrapper(),
        args,
        input_names=names,
        dynamo=True,
        dynamic_shapes=(tuple({0: batch} for _ in names),),
        external_data=False,
        verbose=False,
    )
    program.save(path)


def run_artifact(path: str, format: str, inputs):
    """Runs an exported artifact in its own runtime; returns its first output as numpy.

    SavedModel: `tf.saved_model.load(...).serve`; ONNX: `onnxruntime.InferenceSession`;
    LiteRT: the `ai_edge_litert` interpreter (TensorFlow's `tf.lite.Interpreter` without it).
    `inputs` is an array, or a dict of arrays for a model with several inputs.
    """
    import numpy as np

    feeds = inputs if isinstance(inputs, dict) else {None: inputs}
    feeds = {k: np.asarray(v) for k, v in feeds.items()}
    if format == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)  # must outlive the call: it owns the variables
        return np.asarray(loaded.serve(inputs if isinstance(inputs, dict) else feeds[None]))
    if format == "onnx":
        _require("onnxruntime", "running an ONNX file")
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        values = list(feeds.values()) if None in feeds else [feeds[_base(n)] for n in names]
        return session.run(None, dict(zip(names, values, strict=True)))[0]
    if format == "litert":
        interpreter = _litert_interpreter(path)
        details = interpreter.get_input_details()
        for detail in details:
            value = feeds[None] if None in feeds else feeds[_base(detail["name"])]
            interpreter.resize_tensor_input(detail["index"], value.shape)
        interpreter.allocate_tensors()
        for detail in details:
            value = feeds[None] if None in feeds else feeds[_base(detail["name"])]
            interpreter.set_tensor(detail["index"], value.astype(detail["dtype"]))
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    raise ValueError(f"Unknown export format {format!r}; use one of {FORMATS}.")


def _base(name: str) -> str:
    """Model input name from a runtime's tensor name (`serving_default_frames:0` → frames)."""
    name = name.split(":")[0]
    return name[len("serving_default_") :] if name.startswith("serving_default_") else name


def _litert_interpreter(path: str):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=path)


def check_artifact(model, path: str, format: str, batch_size: int = 2, seed: int = 0) -> float:
    """max |Δ| between `model` and its exported artifact on a random [0, 255] input."""
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    inputs = model.input if isinstance(model.input, dict) else {None: model.input}
    feeds = {}
    for name, tensor in inputs.items():
        shape = (batch_size, *tensor.shape[1:])
        if "int" in keras.backend.standardize_dtype(tensor.dtype):
            feeds[name] = np.tile(np.arange(shape[1]), (batch_size, 1)).astype(tensor.dtype)
        else:
            feeds[name] = rng.uniform(0, 255, shape).astype("float32")
    feeds = feeds[None] if None in feeds else feeds
    expected = keras.ops.convert_to_numpy(model(feeds, training=False))
    return float(np.max(np.abs(run_artifact(path, format, feeds) - expected)))
