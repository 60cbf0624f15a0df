"""ONNX through the PyTorch backend (torch.export / dynamo), run in onnxruntime.

Runs in `make test`'s PyTorch pass; tests/test_export.py covers the TensorFlow routes.
"""

import importlib.util

import keras
import numpy as np
import pytest

import keras_vtn
from keras_vtn.export import export_model

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="the torch.export ONNX route needs KERAS_BACKEND=torch",
)

TINY = {
    # Keras' own torch ONNX export failed on this one (a Gather in its layer norm).
    "vivit_factorised_encoder": lambda: keras_vtn.ViViT(
        "factorised_encoder", hidden_dim=32, num_heads=2, mlp_dim=64, num_spatial_layers=1,
        num_temporal_layers=1, num_frames=4, image_size=32, tubelet_size=(2, 16, 16),
        num_classes=3,
    ),
    # Leap attention's frame pairing must stay a reshape + transpose (a gather did not load).
    "laps_vit": lambda: keras_vtn.LAPSTransformer(
        "vit_base", num_frames=4, image_size=32, patch_size=16, hidden_dim=32, num_layers=2,
        num_heads=2, mlp_dim=64, num_classes=3,
    ),
}


@pytest.mark.parametrize("family", list(TINY))
def test_torch_onnx_export_matches_keras_in_onnxruntime(family, tmp_path):
    for module in ("onnxruntime", "onnxscript"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'keras-vtn[export]')")
    import onnxruntime

    model = TINY[family]()
    rng = np.random.default_rng(0)
    for variable in model.weights:  # zero-initialised heads would hide errors
        value = keras.ops.convert_to_numpy(variable)
        variable.assign(value + rng.normal(0.0, 0.1, value.shape).astype(value.dtype))
    x = rng.uniform(0, 255, (2, *model.input_shape[1:])).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))

    path = export_model(model, str(tmp_path / f"{family}.onnx"), "onnx")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for batch in (x, x[:1]):  # the batch axis stays dynamic
        got = session.run(None, {name: batch})[0]
        assert np.max(np.abs(got - expected[: len(batch)])) <= 1e-4
