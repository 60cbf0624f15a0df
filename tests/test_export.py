"""Export table: every family × SavedModel / ONNX / LiteRT, run in the artifact's own runtime.

Each artifact is loaded by its runtime (tf.saved_model.load, onnxruntime, the LiteRT
interpreter), never by Keras, and its logits must match the Keras model's within 1e-4.
Formats the active backend cannot write are skipped (`make test` runs this file on
TensorFlow, which writes all three); ONNX on PyTorch runs in tests/models/test_export_torch.py.
"""

import importlib.util
import os

import keras
import numpy as np
import pytest

import keras_vtn
from keras_vtn import cli
from keras_vtn.export import ROUTES, export_model

BACKEND = keras.backend.backend()
TOLERANCE = 1e-4
VIVIT = dict(hidden_dim=32, num_heads=2, mlp_dim=64, num_frames=4, image_size=32,
             tubelet_size=(2, 16, 16), num_classes=3)
VIT = dict(patch_size=16, hidden_dim=32, num_spatial_layers=1, num_spatial_heads=2,
           spatial_mlp_dim=64, num_frames=4, image_size=32, num_classes=3)
FAMILIES = {
    "vivit_spatio_temporal": lambda: keras_vtn.ViViT("spatio_temporal", num_layers=1, **VIVIT),
    "vivit_factorised_encoder": lambda: keras_vtn.ViViT(
        "factorised_encoder", num_spatial_layers=1, num_temporal_layers=1, **VIVIT
    ),
    "vivit_factorised_self_attention": lambda: keras_vtn.ViViT(
        "factorised_self_attention", num_layers=1, **VIVIT
    ),
    "vivit_factorised_dot_product": lambda: keras_vtn.ViViT(
        "factorised_dot_product", num_layers=1, **VIVIT
    ),
    "linear_vtn": lambda: keras_vtn.LinearVTN(
        num_temporal_layers=1, num_temporal_heads=2, temporal_head_dim=16,
        temporal_mlp_dim=64, linformer_k=3, **VIT
    ),
    "vtn": lambda: keras_vtn.VTN(
        num_temporal_layers=1, num_temporal_heads=2, temporal_mlp_dim=64, attention_window=2,
        max_position_embeddings=8, head_hidden_dim=16, **VIT
    ),
    "laps_vit": lambda: keras_vtn.LAPSTransformer(
        "vit_base", num_frames=4, image_size=32, patch_size=16, hidden_dim=32, num_layers=2,
        num_heads=2, mlp_dim=64, num_classes=3
    ),
    "laps_visformer": lambda: keras_vtn.LAPSTransformer(
        "visformer_small", num_frames=4, image_size=32, stem_width=8, widths=(8, 16, 32),
        depths=(1, 1, 1), num_heads=2, num_classes=3
    ),
}
SUFFIX = {"savedmodel": "", "onnx": ".onnx", "litert": ".tflite"}


def tiny_model(family: str) -> keras.Model:
    """A tiny model with every weight perturbed (zero-initialised heads would hide errors)."""
    model = FAMILIES[family]()
    rng = np.random.default_rng(0)
    for variable in model.weights:
        value = keras.ops.convert_to_numpy(variable)
        noise = rng.normal(0.0, 0.1, value.shape).astype(value.dtype)
        # BatchNorm variances must stay positive.
        value = np.abs(value + noise) + 0.5 if "variance" in variable.path else value + noise
        variable.assign(value)
    return model


def clip(model: keras.Model, batch_size: int = 2) -> np.ndarray:
    shape = (batch_size, *model.input_shape[1:])
    return np.random.default_rng(1).uniform(0, 255, shape).astype("float32")


def run_in_runtime(path: str, format: str, x: np.ndarray) -> np.ndarray:
    """The artifact's own runtime, no Keras involved."""
    if format == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)  # must outlive the call: it owns the variables
        return np.asarray(loaded.serve(x))
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tensorflow.lite import Interpreter
    interpreter = Interpreter(model_path=path)
    (detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(detail["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def skip_unless_available(format: str) -> None:
    if BACKEND not in ROUTES[format]:
        pytest.skip(f"{format} export needs the {'/'.join(ROUTES[format])} backend")
    needed = {"onnx": ["onnxruntime", "tf2onnx" if BACKEND == "tensorflow" else "onnxscript"],
              "savedmodel": ["tensorflow"], "litert": ["tensorflow"]}[format]
    for module in needed:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'keras-vtn[export]')")


@pytest.fixture(scope="module")
def models():
    return {}


@pytest.mark.parametrize("format", ["savedmodel", "onnx", "litert"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_export_runs_in_its_runtime_with_keras_logits(family, format, models, tmp_path):
    skip_unless_available(format)
    if family not in models:
        models[family] = tiny_model(family)
    model = models[family]
    x = clip(model, batch_size=2)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    path = export_model(model, str(tmp_path / f"{family}{SUFFIX[format]}"), format)
    got = run_in_runtime(path, format, x)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= TOLERANCE
    # The batch axis stays dynamic.
    single = run_in_runtime(path, format, x[:1])
    assert np.max(np.abs(single - expected[:1])) <= TOLERANCE


def test_litert_file_has_no_flex_ops(tmp_path):
    """Builtin ops only: the standalone LiteRT runtime has no TensorFlow (Flex) kernels."""
    skip_unless_available("litert")
    path = export_model(tiny_model("laps_vit"), str(tmp_path / "laps.tflite"), "litert")
    with open(path, "rb") as f:
        assert b"Flex" not in f.read()


@pytest.fixture(scope="module")
def saved_keras(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cli") / "vivit.keras")
    tiny_model("vivit_factorised_encoder").save(path)
    return path


def test_cli_export_writes_a_checked_artifact(saved_keras, tmp_path, capsys):
    skip_unless_available("litert")
    out = str(tmp_path / "vivit.tflite")
    argv = ["export", saved_keras, "--format", "litert", "-o", out, "--check"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert os.path.isfile(out)
    delta = float(printed.rsplit(":", 1)[1])
    assert delta <= TOLERANCE


@pytest.mark.parametrize(
    "argv, message",
    [
        (["missing.keras", "--format", "onnx", "-o", "x.onnx"], "missing.keras"),
        (["{model}", "--format", "litert", "-o", "x.lite"], "must end with .tflite"),
        (["{model}", "--format", "savedmodel", "-o", "{existing}"], "exists; pass --overwrite"),
    ],
)
def test_cli_user_mistakes_are_one_line_errors(argv, message, saved_keras, tmp_path, capsys):
    existing = tmp_path / "out"
    existing.mkdir()
    argv = [a.format(model=saved_keras, existing=existing) for a in argv]
    assert cli.main(["export", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_unknown_format_is_an_error():
    with pytest.raises(ValueError, match="Unknown export format 'tflite'"):
        export_model(None, "x", "tflite")


def test_docstring_examples_run():
    skip_unless_available("savedmodel")
    import doctest

    from keras_vtn import export

    result = doctest.testmod(export, optionflags=doctest.ELLIPSIS)
    assert result.attempted and not result.failed
