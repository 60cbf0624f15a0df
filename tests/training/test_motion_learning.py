"""The default family's small model learns the motion task; frame-shuffled clips stay at chance.

A frame *set* still shows the kind of motion (translation, rotation, scaling: 3 groups of 2
classes); only the frame *order* tells the direction within a group. So without order the
6-way chance is 1/3 and the direction chance is 1/2.

All four families run under the slow marker with the `make demo` configurations (VTN
with a small CNN per frame, see `small_config`).
"""

import keras
import numpy as np
import pytest

from keras_vtn.data import generate_motion_dataset
from keras_vtn.demo import DEMO_MODELS, DEMO_TRAINING
from keras_vtn.evaluation import evaluate_views
from keras_vtn.training import TrainConfig, eval_dataset, get_builder, train

PAIRS = (("approaching", "receding"), ("moving_left", "moving_right"),
         ("rotating_anticlockwise", "rotating_clockwise"))


def direction_accuracy(report) -> float:
    """Correct direction among the clips whose predicted class is in the true group."""
    names = report["label_names"]
    matrix = np.array(report["confusion_matrix"])
    correct = total = 0
    for a, b in PAIRS:
        i, j = names.index(a), names.index(b)
        correct += matrix[i, i] + matrix[j, j]
        total += matrix[i, i] + matrix[j, j] + matrix[i, j] + matrix[j, i]
    return correct / max(total, 1)


@pytest.fixture(scope="module")
def motion_root(tmp_path_factory):
    return generate_motion_dataset(tmp_path_factory.mktemp("motion"),
                                   {"train": 40, "val": 10}, size=48, num_frames=20)


def _fit(root, output, family="vivit", model_kwargs=None, epochs=7, **overrides):
    config = TrainConfig.from_preset(
        "motion_demo", family=family, model_kwargs=dict(model_kwargs or DEMO_MODELS[family]),
        data_root=str(root),
        output_dir=str(output), epochs=epochs, batch_size=16, verbose=0, backup=False,
        save_model=False, seed=0, **{**DEMO_TRAINING.get(family, {}), **overrides},
    )
    result = train(config)
    report = evaluate_views(result["model"], eval_dataset(config, num_clips=1, num_crops=1))
    keras.backend.clear_session()
    print(f"top-1 {report['top1']:.3f} direction {direction_accuracy(report):.3f}")
    return report, result


def test_small_vivit_learns_motion(motion_root, tmp_path):
    report, result = _fit(motion_root, tmp_path)
    assert report["top1"] >= 0.6, (report["top1"], result["history"])
    assert direction_accuracy(report) >= 0.7, report["confusion_matrix"]
    # The training curve went down (the model learnt, not a lucky initialisation).
    losses = result["history"]["loss"]
    assert losses[-1] < 0.6 * losses[0]


def test_frame_order_blind_control_stays_near_chance(motion_root, tmp_path):
    """Same model and budget, frames shuffled within every clip: the motion is gone."""
    report, result = _fit(motion_root, tmp_path, shuffle_frames=True)
    assert report["top1"] <= 1 / 3 + 0.15, (report["top1"], report["confusion_matrix"])
    assert abs(direction_accuracy(report) - 0.5) <= 0.2, report["confusion_matrix"]


def small_conv_backbone() -> dict:
    """A three-layer CNN per 32x32 frame, serialized as JSON training configs hold it."""
    layers = keras.layers
    model = keras.Sequential(
        [keras.Input((32, 32, 3))]
        + [layers.Conv2D(w, 3, strides=2, padding="same", activation="relu") for w in (32, 64, 64)]
        + [layers.Flatten(), layers.Dense(64)],
        name="small_conv_backbone",
    )
    return keras.saving.serialize_keras_object(model)


def small_config(family: str) -> dict:
    """The demo model, except VTN, whose per-frame backbone is a small CNN here.

    From scratch, ViT frames + VTN's post-LN Longformer sit at chance for 5 to 14 epochs
    depending on the seed (0.27-0.78 top-1 after 24-32 epochs on these 240 clips over seeds
    and learning rates; the demo's 600 clips x 32 epochs reached 97%). VTN is
    backbone-agnostic (the paper pairs it with ResNet, DeiT and ViT); with this CNN it leaves
    chance within 3-4 epochs.
    """
    if family != "vtn":
        return DEMO_MODELS[family]
    vit_args = ("patch_size", "hidden_dim", "num_spatial_layers", "num_spatial_heads",
                "spatial_mlp_dim")
    config = {k: v for k, v in DEMO_MODELS[family].items() if k not in vit_args}
    return dict(config, spatial_backbone=small_conv_backbone())


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(DEMO_MODELS))
def test_each_family_learns_motion(family, motion_root, tmp_path):
    try:
        get_builder(family)
    except ImportError as error:
        pytest.skip(str(error))
    # The frame-vector families (LinearVTN, VTN) need longer to tell directions apart.
    epochs = 24 if family == "vtn" else 10
    report, result = _fit(motion_root, tmp_path, family=family, epochs=epochs,
                          model_kwargs=small_config(family))
    # Above the 1/3 that frame sets allow, and directions better than coin flips: uses time.
    assert report["top1"] >= 0.45, (family, report["top1"], result["history"])
    assert direction_accuracy(report) >= 0.65, report["confusion_matrix"]
