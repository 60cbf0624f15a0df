import numpy as np
import pytest
from layer_checks import (
    assert_config_round_trip,
    assert_mixed_precision,
    randomize_weights,
    to_numpy,
)

from keras_vtn.layers import ClassToken, PatchEmbedding, PositionEmbedding, TubeletEmbedding


def conv3d_reference(x, kernel, bias):
    """A VALID Conv3D with stride = kernel, written as explicit loops; tokens t, h, w order."""
    t, h, w = kernel.shape[:3]
    batch, frames, height, width, _ = x.shape
    tokens = []
    for it in range(frames // t):
        for ih in range(height // h):
            for iw in range(width // w):
                patch = x[:, it * t : (it + 1) * t, ih * h : (ih + 1) * h, iw * w : (iw + 1) * w]
                tokens.append(np.einsum("bthwc,thwcd->bd", patch, kernel) + bias)
    return np.stack(tokens, axis=1)


def test_tubelet_matches_conv3d_and_token_order(rng):
    # 5 frames, 9x11 pixels: remainders are dropped like a VALID conv.
    x = rng.normal(size=(2, 5, 9, 11, 3)).astype("float32")
    layer = TubeletEmbedding(hidden_dim=6, tubelet_size=(2, 4, 3))
    layer.build(x.shape)
    randomize_weights(layer)
    expected = conv3d_reference(x, to_numpy(layer.kernel), to_numpy(layer.bias))
    out = to_numpy(layer(x))
    assert out.shape == (2, 2 * 2 * 3, 6) == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(out, expected, atol=1e-5)

    frames = TubeletEmbedding(hidden_dim=6, tubelet_size=(2, 4, 3), flatten=False)
    frames.build(x.shape)
    frames.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(frames(x)), expected.reshape(2, 2, 6, 6), atol=1e-5)


def test_tubelet_kernel_from_image(rng):
    image_kernel = rng.normal(size=(4, 4, 3, 5)).astype("float32")
    central = TubeletEmbedding.kernel_from_image(image_kernel, 3, "central_frame")
    assert central.shape == (3, 4, 4, 3, 5)
    np.testing.assert_array_equal(central[1], image_kernel)
    assert not central[0].any() and not central[2].any()

    inflated = TubeletEmbedding.kernel_from_image(image_kernel, 2, "inflate")
    # A static clip through the inflated kernel gives the image embedding.
    frame = rng.normal(size=(1, 1, 8, 8, 3)).astype("float32")
    static = np.repeat(frame, 2, axis=1)
    bias = np.zeros(5, "float32")
    np.testing.assert_allclose(
        conv3d_reference(static, inflated, bias),
        conv3d_reference(frame, image_kernel[None], bias),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="Unknown method"):
        TubeletEmbedding.kernel_from_image(image_kernel, 2, "average")


def test_patch_embedding_images_and_clips(rng):
    clip = rng.normal(size=(2, 3, 8, 12, 3)).astype("float32")
    layer = PatchEmbedding(hidden_dim=4, patch_size=4)
    layer.build(clip.shape)
    randomize_weights(layer)
    out = to_numpy(layer(clip))
    assert out.shape == (2, 3, 6, 4) == layer.compute_output_shape(clip.shape)
    kernel, bias = to_numpy(layer.kernel), to_numpy(layer.bias)
    for t in range(3):
        expected = conv3d_reference(clip[:, t : t + 1], kernel[None], bias)
        np.testing.assert_allclose(out[:, t], expected, atol=1e-5)
    np.testing.assert_allclose(to_numpy(layer(clip[:, 1])), out[:, 1], atol=1e-6)


def test_class_token_prepends_per_frame(rng):
    x = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    layer = ClassToken()
    layer.build(x.shape)
    randomize_weights(layer)
    out = to_numpy(layer(x))
    assert out.shape == (2, 3, 5, 5) == layer.compute_output_shape(x.shape)
    np.testing.assert_array_equal(out[:, :, 1:], x)
    np.testing.assert_array_equal(out[:, :, 0], np.broadcast_to(to_numpy(layer.token), (2, 3, 5)))


def test_position_embedding_adds_table(rng):
    x = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    layer = PositionEmbedding()
    layer.build(x.shape)
    randomize_weights(layer)
    assert layer.embeddings.shape == (4, 5)
    np.testing.assert_allclose(to_numpy(layer(x)), x + to_numpy(layer.embeddings)[None, None])


def test_position_embedding_resize():
    dim = 2
    # A table linear in (t, h, w) stays linear inside the grid after resizing.
    t, h, w = np.meshgrid(np.arange(2), np.arange(3), np.arange(3), indexing="ij")
    table = np.stack([t + 10 * h, w], axis=-1).reshape(-1, dim).astype("float32")
    cls = np.full((1, dim), 7.0, "float32")
    full = np.concatenate([cls, table])

    same = PositionEmbedding.resize(full, (2, 3, 3), (2, 3, 3), num_prefix_tokens=1)
    np.testing.assert_array_equal(same, full)

    resized = PositionEmbedding.resize(full, (2, 3, 3), (4, 3, 6), num_prefix_tokens=1)
    assert resized.shape == (1 + 4 * 3 * 6, dim)
    np.testing.assert_array_equal(resized[0], cls[0])
    grid = resized[1:].reshape(4, 3, 6, dim)
    # half-pixel linear: new t positions map to source -0.25, 0.25, 0.75, 1.25 -> clamped.
    np.testing.assert_allclose(grid[:, 0, 0, 0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)
    np.testing.assert_allclose(grid[0, :, 0, 0], [0.0, 10.0, 20.0], atol=1e-6)
    np.testing.assert_allclose(grid[0, 0, :, 1], [0, 0.25, 0.75, 1.25, 1.75, 2.0], atol=1e-6)

    image = np.concatenate([cls, table[:9]])  # a (3, 3) image table
    tiled = PositionEmbedding.resize(image, (3, 3), (4, 3, 3), 1, temporal_method="tile")
    grid = tiled[1:].reshape(4, 3, 3, dim)
    for i in range(4):
        np.testing.assert_array_equal(grid[i].reshape(9, dim), table[:9])
    with pytest.raises(ValueError, match="grid tokens"):
        PositionEmbedding.resize(full, (3, 3), (3, 3), 1)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda **kw: TubeletEmbedding(8, (2, 4, 4), **kw), (1, 4, 8, 8, 3)),
        (lambda **kw: PatchEmbedding(8, 4, **kw), (1, 2, 8, 8, 3)),
        (lambda **kw: ClassToken(**kw), (1, 2, 4, 8)),
        (lambda **kw: PositionEmbedding(**kw), (1, 2, 4, 8)),
    ],
)
def test_serialization_and_mixed_precision(make, shape, rng):
    x = rng.normal(size=shape).astype("float32")
    layer = make()
    layer.build(shape)
    randomize_weights(layer)
    assert_config_round_trip(layer, x)
    assert_mixed_precision(make, x)
