"""Optimizers of the papers' recipes: SGD (momentum, Nesterov) and AdamW without weight decay on
norms, biases, position embeddings and class tokens; LR scaling with the global batch.

>>> import keras
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.LayerNormalization(),
...                           keras.layers.Dense(2)])
>>> [v.path.split("/", 1)[1] for v in no_weight_decay_variables(model)]
['layer_normalization/gamma', 'layer_normalization/beta', 'dense/bias']
>>> build_optimizer("adamw", 1e-3, weight_decay=0.05, model=model).__class__.__name__
'AdamW'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras

# Regular expressions on `variable.path`. Norm scales/offsets (LayerNorm and BatchNorm `gamma`,
# `beta`), every bias, learned position tables (`PositionEmbedding.embeddings`, HF-style
# `position_embeddings`), class tokens (`ClassToken.token`, `cls_token`) and BN statistics.
NO_DECAY_PATTERNS: tuple[str, ...] = (
    r"(^|/)(gamma|beta|scale)$",
    r"(^|/)bias$",
    r"(^|/)embeddings$",
    r"position_embedding",
    r"(^|/)token$",
    r"cls_token",
    r"moving_(mean|variance)$",
)

OPTIMIZERS = ("sgd", "nesterov", "adamw", "adam")


def no_weight_decay_variables(
    model: keras.Model, patterns: Sequence[str] = NO_DECAY_PATTERNS
) -> list:
    """The trainable variables of `model` whose path matches one of `patterns`."""
    regex = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None
    if regex is None:
        return []
    return [v for v in model.trainable_variables if regex.search(v.path)]


def scale_learning_rate(
    base_lr: float, global_batch_size: int, base_batch_size: int | None, rule: str = "linear"
) -> float:
    """The LR for `global_batch_size` when `base_lr` was tuned at `base_batch_size`.

    `rule` is `"linear"` (Goyal et al.), `"sqrt"` or `"none"`.
    """
    if not base_batch_size or rule == "none":
        return float(base_lr)
    ratio = global_batch_size / base_batch_size
    if rule == "linear":
        return float(base_lr) * ratio
    if rule == "sqrt":
        return float(base_lr) * ratio**0.5
    raise ValueError(f'rule must be "linear", "sqrt" or "none", not {rule!r}')


def build_optimizer(
    name: str = "adamw",
    learning_rate=1e-3,
    *,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
    clipnorm: float | None = None,
    global_clipnorm: float | None = None,
    gradient_accumulation_steps: int | None = None,
    model: keras.Model | None = None,
    no_decay_patterns: Sequence[str] | None = NO_DECAY_PATTERNS,
) -> keras.optimizers.Optimizer:
    """A Keras optimizer for one of `OPTIMIZERS`.

    Args:
        name: `"sgd"` (momentum; `nesterov=True` or name `"nesterov"` for Nesterov),
            `"adamw"` or `"adam"`.
        learning_rate: a float or a `LearningRateSchedule`.
        weight_decay: decoupled weight decay (Keras applies `w -= lr * wd * w` for every
            optimizer; PyTorch SGD's `weight_decay` is an L2 term in the gradient instead,
            which differs once momentum is involved).
        clipnorm, global_clipnorm: per-variable or global gradient-norm clipping (the
            papers' `clip_grad_norm` is global).
        gradient_accumulation_steps: apply the mean gradient of this many batches (Keras
            `gradient_accumulation_steps`; the LR schedule then counts optimizer updates).
        model: with `weight_decay`, its variables matching `no_decay_patterns` (on the
            variable path) get no decay — norms, biases, position embeddings, class tokens.
    """
    name = name.lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {name!r}")
    common = dict(
        learning_rate=learning_rate,
        weight_decay=weight_decay or None,
        clipnorm=clipnorm,
        global_clipnorm=global_clipnorm,
    )
    if gradient_accumulation_steps and gradient_accumulation_steps > 1:
        common["gradient_accumulation_steps"] = int(gradient_accumulation_steps)
    if name in ("sgd", "nesterov"):
        optimizer = keras.optimizers.SGD(
            momentum=momentum, nesterov=nesterov or name == "nesterov", **common
        )
    elif name == "adamw":
        common["weight_decay"] = weight_decay
        optimizer = keras.optimizers.AdamW(
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **common
        )
    else:
        optimizer = keras.optimizers.Adam(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **common)
    if weight_decay and no_decay_patterns:
        if model is None:
            raise ValueError(
                "Pass model= so norms, biases, position embeddings and class tokens can be "
                "excluded from weight decay (or no_decay_patterns=None to decay everything)."
            )
        optimizer.exclude_from_weight_decay(
            var_list=no_weight_decay_variables(model, no_decay_patterns)
        )
    return optimizer
