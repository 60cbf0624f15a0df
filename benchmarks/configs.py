"""Benchmark configurations: which builder, which arguments, which reference model.

Pure data (no keras/torch import), shared by the parent process and the workers.
"""

from __future__ import annotations

# name -> spec. `builder` is a keras_vtn builder name, `kwargs` its arguments (weights=None:
# random initialisation; speed does not depend on the values). `reference` names a builder in
# benchmarks/reference.py (None: no runnable original, e.g. scenic's Flax ViViT Models 2-4).
MODELS: dict[str, dict] = {
    "vivit_b_spatio_temporal": dict(
        builder="ViViT",
        kwargs=dict(variant="spatio_temporal", size="base", num_frames=32, image_size=224),
        reference="hf_vivit",
    ),
    "vivit_b_factorised_encoder": dict(
        builder="ViViT",
        kwargs=dict(variant="factorised_encoder", size="base", num_frames=32, image_size=224),
        reference=None,
    ),
    "vivit_b_factorised_self_attention": dict(
        builder="ViViT",
        kwargs=dict(
            variant="factorised_self_attention", size="base", num_frames=32, image_size=224
        ),
        reference=None,
    ),
    "vivit_b_factorised_dot_product": dict(
        builder="ViViT",
        kwargs=dict(variant="factorised_dot_product", size="base", num_frames=32, image_size=224),
        reference=None,
    ),
    "linear_vtn_b_16": dict(
        builder="LinearVTN",
        kwargs=dict(size="base", num_frames=16, image_size=224),
        reference="elb3k_linear_vtn",
    ),
    "vtn_b_16": dict(
        builder="VTN",
        kwargs=dict(size="base", num_frames=16, image_size=224),
        reference="bomri_vtn",
    ),
    "vtn_b_250": dict(
        builder="VTN",
        kwargs=dict(size="base", num_frames=250, image_size=224),
        reference="bomri_vtn",
    ),
    "laps_vit_b_8": dict(
        builder="LAPSTransformer",
        kwargs=dict(backbone="vit_base", num_frames=8, image_size=224),
        reference="laps_vit",
    ),
    "laps_visformer_s_8": dict(
        builder="LAPSTransformer",
        kwargs=dict(backbone="visformer_small", num_frames=8, image_size=224),
        reference="laps_visformer",
    ),
    # The plain per-frame 2D backbones (the repo's "base2d" ablation) for the LAPS overhead.
    "laps_vit_b_8_plain2d": dict(
        builder="LAPSTransformer",
        kwargs=dict(
            backbone="vit_base", num_frames=8, image_size=224, leap_levels=None, fold_div=0
        ),
        reference="laps_vit_plain2d",
    ),
    "laps_visformer_s_8_plain2d": dict(
        builder="LAPSTransformer",
        kwargs=dict(
            backbone="visformer_small",
            num_frames=8,
            image_size=224,
            leap_levels=None,
            fold_div=0,
        ),
        reference="laps_visformer_plain2d",
    ),
    # Tiny configurations for smoke tests of the harness (not meaningful for speed).
    "tiny_vivit": dict(
        builder="ViViT",
        kwargs=dict(
            variant="spatio_temporal",
            num_frames=4,
            image_size=32,
            tubelet_size=(2, 16, 16),
            hidden_dim=32,
            num_heads=2,
            mlp_dim=64,
            num_layers=1,
            num_classes=5,
        ),
        reference="hf_vivit",
    ),
}
MODELS["tiny_vivit_wide"] = dict(
    MODELS["tiny_vivit"], kwargs=dict(MODELS["tiny_vivit"]["kwargs"], hidden_dim=48)
)

# The configurations the README table covers (the default of `python -m benchmarks.models`).
FULL_SIZE = [name for name in MODELS if not name.startswith("tiny") and "plain2d" not in name]


def input_shape(name: str, batch: int) -> tuple[int, int, int, int, int]:
    """(batch, frames, height, width, 3) of a configuration."""
    kwargs = MODELS[name]["kwargs"]
    size = kwargs.get("image_size", 224)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return (batch, kwargs.get("num_frames", 8), height, width, 3)
