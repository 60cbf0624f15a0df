"""The default family's small model learns the motion task; frame-shuffled clips stay at chance.

A frame *set* still shows the kind of motion (translation, rotation, scaling: 3 groups of 2
classes); only the frame *order* tells the direction within a group. So without order the
6-way chance is 1/3 and the direction chance is 1/2.

All four families run under the slow marker with the `make demo` configurations.
"""

import keras
import numpy as np
import pytest

from keras_vtn.datasets import generate_motion_dataset
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


@pytest.mark.slow
@pytest.mark.parametrize("family", [
    pytest.param(f, marks=pytest.mark.xfail(
        reason="VTN's post-LN Longformer needs more data than this test's 240 clips: with the "
               "demo settings it reached 0.53 top-1 / 0.58 direction here after 24 epochs, "
               "while `make demo FAMILY=vtn` (600 clips, 32 epochs) reached 98% val accuracy",
        strict=False)) if f == "vtn" else f
    for f in sorted(DEMO_MODELS)
])
def test_each_family_learns_motion(family, motion_root, tmp_path):
    try:
        get_builder(family)
    except ImportError as error:
        pytest.skip(str(error))
    # VTN's post-LN Longformer starts slowly (0.43 top-1 after 10 epochs, see DEMO_TRAINING).
    epochs = 24 if family == "vtn" else 10
    report, result = _fit(motion_root, tmp_path, family=family, epochs=epochs)
    # Above the 1/3 that frame sets allow, and directions better than coin flips: uses time.
    assert report["top1"] >= 0.45, (family, report["top1"], result["history"])
    assert direction_accuracy(report) >= 0.65, report["confusion_matrix"]
