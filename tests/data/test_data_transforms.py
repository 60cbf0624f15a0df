"""Whole-clip augmentation: one set of random parameters for every frame, checked on pixels."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_vtn.data import read_frames
from keras_vtn.data import transforms as T


def _still_clip(frames=4, height=40, width=56, seed=0):
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return tf.constant(np.repeat(image[None], frames, 0))


AUGMENTS = {
    "random_crop": dict(crop_mode="random", flip=False),
    "random_resized_crop": dict(crop_mode="random_resized", flip=False),
    "flip": dict(crop_mode="center", flip=True),
    "color_jitter": dict(crop_mode="center", flip=False, jitter=(0.4, 0.4, 0.4, 0.1)),
    "everything": dict(crop_mode="random_resized", flip=True, jitter=(0.4, 0.4, 0.4, 0.1)),
}


@pytest.mark.parametrize("name", sorted(AUGMENTS))
def test_every_frame_gets_the_same_augmentation(name):
    clip = _still_clip()
    outputs = [
        T.augment_clip(
            clip, tf.constant([s, 11], tf.int64), crop_size=(32, 32), **AUGMENTS[name]
        ).numpy()
        for s in range(6)
    ]
    for out in outputs:
        assert out.shape == (4, 32, 32, 3)
        for frame in out[1:]:  # identical input frames must stay identical
            np.testing.assert_array_equal(frame, out[0])
    # ... and the augmentation does vary between clips
    assert len({o.tobytes() for o in outputs}) > 1


def test_rand_augment_is_per_clip():
    layer = T.make_rand_augment(num_ops=2, factor=0.5, seed=1)
    clip = _still_clip(frames=3, height=32, width=32)
    outputs = []
    augment = tf.function(lambda c: T.rand_augment(c, layer))
    for _ in range(4):
        out = augment(clip).numpy()
        for frame in out[1:]:
            np.testing.assert_allclose(frame, out[0], atol=1e-3)
        outputs.append(out)
    assert any(np.abs(o - clip.numpy()).max() > 1 for o in outputs)


def test_crop_and_flip_are_consistent_on_a_real_video(videos):
    frames, _ = read_frames(videos["mp4"], [10, 20, 30, 40])  # four different frames
    for s in range(4):
        out = T.augment_clip(
            tf.constant(frames),
            tf.constant([s, 3], tf.int64),
            crop_size=(24, 40),
            crop_mode="random",
            flip=True,
        ).numpy()
        # one crop box (and flip) must explain every frame (block patterns allow several)
        common = None
        for t in range(4):
            found = {
                (dy, dx, flipped)
                for flipped in (False, True)
                for dy in range(48 - 24 + 1)
                for dx in range(64 - 40 + 1)
                if np.array_equal(
                    (frames[t][:, ::-1] if flipped else frames[t])[dy : dy + 24, dx : dx + 40],
                    out[t],
                )
            }
            common = found if common is None else common & found
        assert common


def test_eval_views_three_crops_along_the_long_side():
    clip = tf.constant(np.arange(2 * 1 * 4 * 10 * 3, dtype=np.uint8).reshape(2, 1, 4, 10, 3) % 251)
    views = T.eval_views(clip, crop_size=(4, 4), num_crops=3).numpy()
    assert views.shape == (6, 1, 4, 4, 3)
    np.testing.assert_array_equal(views[0], clip[0, :, :, 0:4])
    np.testing.assert_array_equal(views[1], clip[0, :, :, 3:7])
    np.testing.assert_array_equal(views[5], clip[1, :, :, 6:10])
    tall = tf.transpose(clip, [0, 1, 3, 2, 4])
    views = T.eval_views(tall, crop_size=(4, 4), num_crops=3).numpy()
    np.testing.assert_array_equal(views[2], tall[0, :, 6:10, :])


def test_small_frames_are_covered_before_cropping():
    out = T.center_crop(tf.zeros((2, 20, 30, 3), tf.uint8), (32, 32))
    assert out.shape == (2, 32, 32, 3)


def test_mixup_mixes_clips_and_labels_alike():
    clips = tf.constant(
        np.stack([np.full((2, 8, 8, 3), 0.0), np.full((2, 8, 8, 3), 100.0)]), tf.float32
    )
    labels = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    mixed, mixed_labels = T.mix_batch(clips, labels, tf.constant([1, 2]), mixup_alpha=0.8)
    lam = float(mixed_labels[0, 0])
    np.testing.assert_allclose(mixed.numpy()[0], 100.0 * (1 - lam), atol=1e-3)
    np.testing.assert_allclose(mixed_labels.numpy().sum(-1), 1.0, atol=1e-6)


def test_cutmix_label_weight_is_the_pasted_area():
    clips = tf.constant(
        np.stack([np.full((3, 16, 16, 3), 0), np.full((3, 16, 16, 3), 200)]), tf.uint8
    )
    labels = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    for s in range(5):
        mixed, mixed_labels = T.mix_batch(clips, labels, tf.constant([s, 9]), cutmix_alpha=1.0)
        pasted = (mixed.numpy()[0] == 200).all(-1)  # (T, H, W)
        assert (pasted == pasted[0]).all()  # same box on every frame
        np.testing.assert_allclose(float(mixed_labels[0, 1]), pasted[0].mean(), atol=1e-6)
