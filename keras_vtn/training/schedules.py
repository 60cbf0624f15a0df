"""Learning-rate schedules of the recipes: linear warm-up then cosine, and step decay.

Both count optimizer steps; `build_schedule` converts epochs to steps.

>>> s = WarmupCosine(0.1, total_steps=100, warmup_steps=10)
>>> [round(float(s(i)), 4) for i in (0, 5, 10, 55, 100)]
[0.0, 0.05, 0.1, 0.05, 0.0]
>>> s = StepDecay(1e-3, boundaries=[13, 24], factor=0.1)
>>> [float(f"{float(s(i)):.0e}") for i in (0, 12, 13, 24)]
[0.001, 0.001, 0.0001, 1e-05]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vtn")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `warmup_start` to `base_lr`, then cosine down to `final_lr`.

    The cosine runs over the `total_steps - warmup_steps` steps after the warm-up (Scenic's
    `compound` "constant * cosine_decay * linear_warmup" schedule).
    """

    def __init__(
        self,
        base_lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        warmup_start: float = 0.0,
        final_lr: float = 0.0,
    ):
        if total_steps <= 0 or warmup_steps < 0 or warmup_steps > total_steps:
            raise ValueError(
                f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}), "
                "total_steps > 0"
            )
        self.base_lr, self.total_steps, self.warmup_steps = base_lr, total_steps, warmup_steps
        self.warmup_start, self.final_lr = warmup_start, final_lr

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        warmup = self.warmup_start + (self.base_lr - self.warmup_start) * step / warm
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = self.final_lr + 0.5 * (self.base_lr - self.final_lr) * (
            1.0 + ops.cos(math.pi * progress)
        )
        return ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return dict(
            base_lr=self.base_lr, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
            warmup_start=self.warmup_start, final_lr=self.final_lr,
        )


@keras.saving.register_keras_serializable(package="keras_vtn")
class StepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`base_lr * factor**k` after the k-th boundary (PyTorch `MultiStepLR`), optional warm-up."""

    def __init__(
        self,
        base_lr: float,
        boundaries: Sequence[int],
        factor: float = 0.1,
        warmup_steps: int = 0,
        warmup_start: float = 0.0,
    ):
        self.base_lr, self.boundaries = base_lr, [int(b) for b in boundaries]
        self.factor, self.warmup_steps, self.warmup_start = factor, warmup_steps, warmup_start

    def __call__(self, step):
        step = ops.cast(step, "float32")
        passed = sum(ops.cast(step >= b, "float32") for b in self.boundaries) if self.boundaries \
            else ops.zeros_like(step)
        lr = self.base_lr * ops.power(ops.cast(self.factor, "float32"), passed)
        if self.warmup_steps:
            warmup = self.warmup_start + (self.base_lr - self.warmup_start) * step / float(
                self.warmup_steps
            )
            lr = ops.where(step < self.warmup_steps, warmup, lr)
        return lr

    def get_config(self):
        return dict(
            base_lr=self.base_lr, boundaries=self.boundaries, factor=self.factor,
            warmup_steps=self.warmup_steps, warmup_start=self.warmup_start,
        )


SCHEDULES = ("cosine", "step", "constant")


def build_schedule(
    name: str,
    base_lr: float,
    *,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float = 0.0,
    milestones: Sequence[float] = (),
    factor: float = 0.1,
):
    """A schedule in optimizer steps from epoch-based recipe values.

    `name` is `"cosine"` (warm-up + cosine to 0), `"step"` (LR times `factor` at each epoch in
    `milestones`) or `"constant"` (plus warm-up).
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, not {name!r}")
    warmup = int(round(warmup_epochs * steps_per_epoch))
    if name == "cosine":
        return WarmupCosine(base_lr, max(steps_per_epoch * epochs, 1), min(warmup,
                            steps_per_epoch * epochs))
    boundaries = [int(round(m * steps_per_epoch)) for m in milestones] if name == "step" else []
    return StepDecay(base_lr, boundaries, factor, warmup_steps=warmup)
