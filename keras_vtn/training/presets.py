"""Per-paper training recipes by name (`keras_vtn.training.PRESETS`), from the specs.

Each preset is a dict of `TrainConfig` fields; command-line flags override them. LRs are the
papers' values at their global batch (`base_batch_size`); `lr_scaling="linear"` rescales them
to your global batch.

>>> sorted(PRESETS)[:3]
['laps_k400', 'linear_vtn_k400', 'motion_demo']
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # ViViT (Arnab et al. 2021; Scenic configs + paper Table 7): synchronous SGD momentum 0.9,
    # no weight decay, grad-norm clip 1.0, 2.5 warm-up epochs then cosine to 0, batch 64,
    # 32 frames stride 2, scale jitter [0.9, 1.33] x 256 before the 224 crop, flip, views
    # 4 clips x 3 crops with logits averaged, inputs in [-1, 1]. The colour-jitter strengths
    # are ours (the spec gives only DMVR's probabilities: 0.8, colour drop 0.1).
    "vivit_k400": dict(
        family="vivit", model_kwargs=dict(variant="factorised_encoder", size="base"),
        weights="imagenet21k", num_frames=32, sampling="dense", frame_stride=2, image_size=224,
        short_side=(230, 340),
        optimizer="sgd", momentum=0.9, learning_rate=0.1, base_batch_size=64, batch_size=64,
        weight_decay=0.0, schedule="cosine", warmup_epochs=2.5, epochs=30, clipnorm=1.0,
        color_jitter=(0.4, 0.4, 0.4, 0.1), val_num_clips=4, val_num_crops=3,
    ),
    # Epic-Kitchens: K400 init, RandAugment (2, 15), mixup 0.1, label smoothing 0.2,
    # stochastic depth 0.2, no colour jitter, stride 1, 4x1 views.
    "vivit_epic_kitchens": dict(
        family="vivit", model_kwargs=dict(variant="factorised_encoder", size="base"),
        weights="k400", num_frames=32, sampling="dense", frame_stride=1, image_size=224,
        short_side=(230, 340), optimizer="sgd", momentum=0.9, learning_rate=0.5,
        base_batch_size=64, batch_size=64, schedule="cosine", warmup_epochs=2.5, epochs=50,
        clipnorm=1.0, rand_augment=(2, 15), mixup_alpha=0.1, label_smoothing=0.2,
        drop_path_rate=0.2, val_num_clips=4, val_num_crops=1,
    ),
    # Something-Something v2: RandAugment (2, 20), mixup 0.3, smoothing 0.3, stochastic
    # depth 0.3, stride 1, short side 288 / crop 256 in the configs (224 in the paper table).
    "vivit_ssv2": dict(
        family="vivit", model_kwargs=dict(variant="factorised_encoder", size="base"),
        weights="k400", num_frames=32, sampling="dense", frame_stride=1, image_size=224,
        optimizer="sgd", momentum=0.9, learning_rate=0.5, base_batch_size=64, batch_size=64,
        schedule="cosine", warmup_epochs=2.5, epochs=35, clipnorm=1.0, rand_augment=(2, 20),
        mixup_alpha=0.3, label_smoothing=0.3, drop_path_rate=0.3,
        val_num_clips=4, val_num_crops=3,
    ),
    # VTN (PySlowFast VIT_B_VTN): SGD Nesterov 0.9, wd 1e-4 on all parameters, batch 16,
    # LR 1e-3 -> 1e-4 at epoch 13 -> 1e-5 at epoch 24, 25 epochs, no warm-up; 16 frames at
    # stride 8 (25 fps), short side [256, 320], crop 224. Evaluation is the whole video.
    "vtn_k400": dict(
        family="vtn", model_kwargs=dict(size="base"), weights="imagenet21k", num_frames=16,
        sampling="time", target_fps=25 / 8, image_size=224, optimizer="sgd", nesterov=True,
        momentum=0.9, learning_rate=1e-3, base_batch_size=16, batch_size=16, weight_decay=1e-4,
        no_decay_patterns=(), schedule="step", milestones=(13, 24), epochs=25,
        val_num_clips=1, val_num_crops=1,
    ),
    # LinearVTN (elb3k/vtn at HEAD): SGD momentum 0.9, wd 1e-4 on all parameters, LR 1e-3,
    # x0.1 from epoch 14 (1-indexed), 25 epochs, batch 16, 16 frames uniformly over 5.12 s.
    "linear_vtn_k400": dict(
        family="linear_vtn", model_kwargs=dict(size="base"), weights="imagenet21k",
        num_frames=16, sampling="time", target_fps=16 / 5.12, image_size=224, optimizer="sgd",
        momentum=0.9, learning_rate=1e-3, base_batch_size=16, batch_size=16, weight_decay=1e-4,
        no_decay_patterns=(), schedule="step", milestones=(13,), epochs=25,
        val_num_clips=1, val_num_crops=1,
    ),
    # LAPS (main_tokshift.py): SGD momentum 0.9, no weight decay, MultiStep [10, 15, 18] x0.1,
    # 18 epochs, gradient accumulation 10, grad-norm clip 1.0, label smoothing 0.1, 8 frames
    # spanning 64 source frames (the original's linspace gives ~9 apart, ours exactly 8),
    # short side [224, 360], crop 224; LR 0.20 at batch 40 (Visformer). The original's colour
    # jitter (each op with p 0.1) has no equivalent here and is left off.
    "laps_k400": dict(
        family="laps", model_kwargs=dict(backbone="visformer_small"), weights=None,
        num_frames=8, sampling="dense", frame_stride=8, image_size=224, short_side=(224, 360),
        optimizer="sgd", momentum=0.9, learning_rate=0.20, base_batch_size=40, batch_size=40,
        schedule="step", milestones=(10, 15, 18), epochs=18, gradient_accumulation_steps=10,
        clipnorm=1.0, label_smoothing=0.1, color_jitter=None, val_num_clips=10, val_num_crops=3,
    ),
    # The built-in motion task (`make demo`): small models, AdamW + warm-up cosine.
    "motion_demo": dict(
        num_frames=8, sampling="dense", frame_stride=2, image_size=32, short_side=(32, 37),
        flip=False, optimizer="adamw", learning_rate=1e-3, weight_decay=0.05, batch_size=16,
        schedule="cosine", warmup_epochs=1.0, epochs=12, clipnorm=1.0, val_num_clips=2,
        val_num_crops=1, layout="csv",
    ),
}


def get_preset(name: str) -> dict:
    """A copy of the preset `name`."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, not {name!r}")
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS[name].items()}
