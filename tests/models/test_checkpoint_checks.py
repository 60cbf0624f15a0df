"""Architecture read from a checkpoint is checked before anything is built; tensors a converter
misses are named.

Every hostile file here is a genuine tiny fixture with a few tensors changed (or a handful of
zero-size tensors) written in the family's original format. Each must be refused with a
CheckpointError naming the file and the tensor, in under 5 s and without building a model
(`refused` also bounds the growth of peak memory).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from checkpoint_files import refused, write_flax_msgpack, write_torch_zip
from safetensors.numpy import load_file, save_file
from vtn_helpers import TINY_LINEAR_VTN, TINY_VTN

import keras_vtn.weights as kvw
from keras_vtn.models import convert_utils
from keras_vtn.models.laps import LAPSTransformer
from keras_vtn.models.linear_vtn import LinearVTN
from keras_vtn.models.vivit import ViViT
from keras_vtn.models.vtn import VTN
from keras_vtn.weights import CheckpointError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LIN = "module.spatial_transformer."
LIN_T = "module.temporal_transformer."
VTN_T = "model_state.temporal_encoder."
LAPS = "state_dict.module.base_model."
SCENIC = "optimizer/target/"  # the 2021 TrainState; the Model 4 fixture uses `params/`
LAPS_TINY = {
    "vit_base": dict(num_heads=2, num_classes=5),
    "visformer_small": dict(num_heads=2, num_classes=5),
}
VIVIT_TINY = dict(num_frames=8, image_size=32, num_classes=5)


def _read(relative: str) -> dict:
    return kvw.read_checkpoint(FIXTURES / relative)


def _torch_file(tmp_path, state, name="hostile.pth") -> Path:
    path = tmp_path / name
    write_torch_zip(path, state)
    return path


def _flax_file(tmp_path, state, name="hostile.msgpack") -> Path:
    path = tmp_path / name
    write_flax_msgpack(path, state)
    return path


def _hf_folder(tmp_path, fixture: str, edit=None, config_edit=None) -> Path:
    folder = tmp_path / fixture
    shutil.copytree(FIXTURES / "vivit" / fixture, folder)
    state = load_file(folder / "model.safetensors")
    if edit:
        edit(state)
    save_file(state, folder / "model.safetensors")
    if config_edit:
        config = json.loads((folder / "config.json").read_text())
        config_edit(config)
        (folder / "config.json").write_text(json.dumps(config))
    return folder


# --- the shared rule -----------------------------------------------------------------------


def test_limits_are_the_largest_known_configurations_times_the_margin():
    assert convert_utils.MARGIN == 2
    # ViT-H/14 / ViViT-H are the largest models of the four families.
    known = convert_utils.LARGEST_KNOWN
    assert (known["width"], known["mlp_width"], known["depth"], known["heads"]) == (
        1280,
        5120,
        32,
        16,
    )
    assert convert_utils.check_limit("depth", 64, "blocks.63.norm1.weight") == 64
    with pytest.raises(CheckpointError, match=r"'blocks\.64\.x' implies depth 65, outside 1\.\.64"):
        convert_utils.check_limit("depth", 65, "blocks.64.x")


def test_count_blocks_refuses_unlike_and_non_contiguous_blocks():
    block = {"norm.weight": np.ones(4), "fc.weight": np.ones((8, 4))}
    state = {f"blocks.{i}.{k}": v for i in range(3) for k, v in block.items()}
    assert convert_utils.count_blocks(state, "blocks.") == 3
    with pytest.raises(CheckpointError, match=r"Missing tensor 'blocks\.1\.fc\.weight'"):
        convert_utils.count_blocks({k: v for k, v in state.items() if k != "blocks.1.fc.weight"},
                                   "blocks.")
    with pytest.raises(CheckpointError, match=r"'blocks\.2\.fc\.weight' has shape \(9, 4\)"):
        convert_utils.count_blocks(dict(state, **{"blocks.2.fc.weight": np.ones((9, 4))}),
                                   "blocks.")
    with pytest.raises(CheckpointError, match="Non-contiguous"):
        convert_utils.count_blocks({k: v for k, v in state.items() if ".1." not in k}, "blocks.")


# --- A: zero-size tensors and fake blocks (the reported LinearVTN files) ----------------------


def test_zero_size_tensors_are_refused_before_building(tmp_path):
    # Every tensor of the fixture, 240x wider (width 7680) and with no values: ~1.5 KB on disk.
    state = {
        name: np.zeros((0,) + tuple(7680 if d == 32 else d for d in value.shape[1:]), "float32")
        if value.ndim
        else value
        for name, value in _read("vtn/lin_vtn.pth").items()
    }
    path = _torch_file(tmp_path, state)
    assert path.stat().st_size < 20_000
    refused(lambda: LinearVTN(weights=path, **TINY_LINEAR_VTN), str(path), "zero-size")


def test_a_zero_size_weight_among_real_ones_is_refused(tmp_path):
    state = _read("vtn/lin_vtn.pth")
    state[LIN_T + "layers.1.1.fn.norm.bias"] = np.zeros((0,), "float32")
    path = _torch_file(tmp_path, state)
    refused(
        lambda: LinearVTN(weights=path, **TINY_LINEAR_VTN),
        str(path),
        LIN_T + "layers.1.1.fn.norm.bias",
        "zero-size",
    )


def test_hundreds_of_fake_blocks_are_refused_before_building(tmp_path):
    state = _read("vtn/lin_vtn.pth")
    for i in range(2, 302):
        state[f"{LIN}blocks.{i}.norm1.weight"] = np.ones(32, "float32")
    path = _torch_file(tmp_path, state)
    refused(
        lambda: LinearVTN(weights=path, **TINY_LINEAR_VTN),
        str(path),
        f"{LIN}blocks.301",
        "depth 302, outside 1..64",
    )


def test_a_few_fake_blocks_within_the_depth_limit_are_refused_as_incomplete(tmp_path):
    state = _read("vtn/lin_vtn.pth")
    for i in range(2, 6):
        state[f"{LIN}blocks.{i}.norm1.weight"] = np.ones(32, "float32")
    path = _torch_file(tmp_path, state)
    refused(
        lambda: LinearVTN(weights=path, **TINY_LINEAR_VTN),
        str(path),
        f"Missing tensor '{LIN}blocks.2.attn.proj.bias'",
    )


# --- A: every family's inference: consistent and sane ----------------------------------------


def test_linear_vtn_frames_beyond_the_limit(tmp_path):
    state = _read("vtn/lin_vtn.pth")
    state[LIN_T + "pos_embedding"] = np.ones((1, 41, 32), "float32")
    for j in range(2):
        state[f"{LIN_T}layers.{j}.0.fn.fn.proj_k"] = np.ones((41, 3), "float32")
    path = _torch_file(tmp_path, state)
    refused(
        lambda: LinearVTN(weights=path, **TINY_LINEAR_VTN),
        str(path),
        LIN_T + "layers.0.0.fn.fn.proj_k",
        "linformer frames 40, outside 1..32",
    )


def test_linear_vtn_width_disagreement(tmp_path):
    state = _read("vtn/lin_vtn.pth")
    state[LIN + "patch_embed.proj.weight"] = np.ones((7680, 3, 8, 8), "float16")
    path = _torch_file(tmp_path, state)
    refused(
        lambda: LinearVTN(weights=path, **TINY_LINEAR_VTN),
        str(path),
        "disagree on the width",
        f"'{LIN}patch_embed.proj.weight' gives 7680",
        f"'{LIN}pos_embed' gives 32",
    )


def test_vtn_position_table_beyond_the_limit(tmp_path):
    state = _read("vtn/vtn.pyth")
    state[VTN_T + "embeddings.position_embeddings.weight"] = np.ones((600, 32), "float32")
    path = _torch_file(tmp_path, state, "hostile.pyth")
    refused(
        lambda: VTN(weights=path, num_frames=10, **TINY_VTN),
        str(path),
        VTN_T + "embeddings.position_embeddings.weight",
        "longformer positions 600, outside 1..576",
    )


def test_vtn_head_width_disagreement(tmp_path):
    state = _read("vtn/vtn.pyth")
    state["model_state.mlp_head.4.weight"] = np.ones((5, 23), "float32")
    path = _torch_file(tmp_path, state, "hostile.pyth")
    refused(
        lambda: VTN(weights=path, num_frames=10, **TINY_VTN),
        str(path),
        "'model_state.mlp_head.4.weight' gives 23",
    )


def _fake_blocks(state, prefix, count):
    """`count` copies of block 0 under `prefix` (a consistent but absurdly deep model)."""
    block0 = {k[len(prefix + "0/") :]: v for k, v in state.items() if k.startswith(prefix + "0/")}
    for i in range(count):
        state.update({f"{prefix}{i}/{k}": v for k, v in block0.items()})


def _scenic_edit(variant, scenic):
    if variant == "spatio_temporal":  # tubelets of 9 frames
        def edit(state):
            state[scenic + "embedding/kernel"] = np.ones((9, 8, 8, 3, 32), "float32")
        return edit, "embedding/kernel", "tubelet frames 9, outside 1..8"
    if variant == "factorised_encoder":  # a temporal table for 80 frames
        def edit(state):
            state[scenic + "TemporalTransformer/posembed_input/pos_embedding"] = np.ones(
                (1, 41, 32), "float32"
            )
        return (edit, "TemporalTransformer/posembed_input/pos_embedding",
                "temporal tokens 41, outside 1..34")
    if variant == "factorised_self_attention":  # 2 heads of 8: 16 wide in a 32-wide model
        def edit(state):
            for i in range(2):
                block = f"{scenic}Transformer/encoderblock_{i}/"
                attention = block + "MultiHeadDotProductAttention_space/"
                for name in ("query", "key", "value"):
                    state[f"{attention}{name}/kernel"] = np.ones((32, 2, 8), "float32")
                state[f"{attention}out/kernel"] = np.ones((2, 8, 32), "float32")
        return (edit, "MultiHeadDotProductAttention_space/query/kernel (heads × head_dim)' "
                "gives 16", "disagree on the width")
    def edit(state):  # factorised_dot_product: 70 layers
        _fake_blocks(state, scenic + "Transformer/encoderblock_", 70)
    return edit, "Transformer/encoderblock_69", "depth 70, outside 1..64"


@pytest.mark.parametrize(
    "variant",
    ["spatio_temporal", "factorised_encoder", "factorised_self_attention",
     "factorised_dot_product"],
)
def test_vivit_scenic_inference_is_checked(tmp_path, variant):
    state = _read(f"vivit/scenic_{variant}.msgpack")
    scenic = next(k for k in state if k.endswith("embedding/kernel"))[: -len("embedding/kernel")]
    edit, *needles = _scenic_edit(variant, scenic)
    edit(state)
    path = _flax_file(tmp_path, state)
    extra = {"variant": variant} if variant == "factorised_dot_product" else {}
    refused(lambda: ViViT(weights=str(path), **VIVIT_TINY, **extra), str(path), *needles)


def test_vivit_scenic_heads_must_agree_across_query_key_value_and_output(tmp_path):
    state = _read("vivit/scenic_spatio_temporal.msgpack")
    for i in range(2):  # 2 heads of 16 in the keys, 4 of 8 everywhere else
        key = f"{SCENIC}Transformer/encoderblock_{i}/MultiHeadDotProductAttention_0/key/kernel"
        state[key] = np.ones((32, 2, 16), "float32")
    path = _flax_file(tmp_path, state)
    refused(
        lambda: ViViT(weights=str(path), **VIVIT_TINY),
        str(path),
        "disagree on the attention layout",
        "MultiHeadDotProductAttention_0/key/kernel' gives (32, 2, 16)",
    )


def test_vivit_hf_legacy_head_count_beyond_the_limit(tmp_path):
    def config_edit(config):
        config["num_attention_heads"] = 1024

    folder = _hf_folder(tmp_path, "hf_legacy", config_edit=config_edit)
    refused(
        lambda: ViViT(weights=str(folder), **VIVIT_TINY),
        str(folder),
        "config.json",
        "heads 1024, outside 1..32",
    )


def test_vivit_hf_v5_position_table_beyond_the_limit(tmp_path):
    def edit(state):
        state["vivit.embeddings.position_embeddings"] = np.ones((1, 13000, 32), "float32")

    folder = _hf_folder(tmp_path, "hf_v5", edit=edit)
    refused(
        lambda: ViViT(weights=str(folder), **VIVIT_TINY),
        str(folder),
        "'vivit.embeddings.position_embeddings' implies video positions 13000",
    )


@pytest.mark.parametrize("family", ["vivit", "laps"])
def test_google_vit_image_patch_beyond_the_limit(tmp_path, family):
    # A Google ViT image checkpoint (pre-Linen names, as released) with 40x40 patches.
    rng = np.random.default_rng(0)
    block = "Transformer/encoderblock_0/"
    state = {
        "embedding/kernel": rng.normal(size=(40, 40, 3, 32)),
        "embedding/bias": np.zeros(32),
        "cls": np.zeros((1, 1, 32)),
        "Transformer/posembed_input/pos_embedding": np.zeros((1, 5, 32)),
        "Transformer/encoder_norm/scale": np.ones(32),
        "Transformer/encoder_norm/bias": np.zeros(32),
        block + "LayerNorm_0/scale": np.ones(32),
        **{
            f"{block}MultiHeadDotProductAttention_1/{name}/kernel": np.zeros((32, 2, 16))
            for name in ("query", "key", "value")
        },
        block + "MultiHeadDotProductAttention_1/out/kernel": np.zeros((2, 16, 32)),
        block + "MlpBlock_3/Dense_0/kernel": np.zeros((32, 64)),
    }
    path = tmp_path / "vit.npz"
    np.savez(path, **{k: v.astype("float32") for k, v in state.items()})
    if family == "vivit":
        build = lambda: ViViT(weights=str(path), **VIVIT_TINY)  # noqa: E731
    else:
        build = lambda: LAPSTransformer("vit_base", weights=str(path), num_classes=5)  # noqa: E731
    refused(build, str(path), "'embedding/kernel' implies patch 40, outside 1..32")


def test_laps_vit_patch_beyond_the_limit(tmp_path):
    state = _read("laps/vit_laps_tiny.pth")
    state[LAPS + "patch_embed.proj.weight"] = np.ones((32, 3, 40, 40), "float32")
    path = _torch_file(tmp_path, state)
    refused(
        lambda: LAPSTransformer("vit_base", weights=path, **LAPS_TINY["vit_base"]),
        str(path),
        f"'{LAPS}patch_embed.proj.weight' implies patch 40, outside 1..32",
    )


def test_laps_visformer_grids_must_halve(tmp_path):
    state = _read("laps/visformer_laps_tiny.pth")
    state[LAPS + "pos_embed2"] = np.ones((1, 16, 5, 5), "float32")
    path = _torch_file(tmp_path, state)
    refused(
        lambda: LAPSTransformer("visformer_small", weights=path, **LAPS_TINY["visformer_small"]),
        str(path),
        "stage-2 grid",
        f"'{LAPS}pos_embed2' gives 5",
    )


def test_laps_visformer_stem_beyond_the_limit(tmp_path):
    state = _read("laps/visformer_laps_tiny.pth")
    state[LAPS + "stem.0.weight"] = np.ones((100, 3, 7, 7), "float32")
    path = _torch_file(tmp_path, state)
    refused(
        lambda: LAPSTransformer("visformer_small", weights=path, **LAPS_TINY["visformer_small"]),
        str(path),
        f"'{LAPS}stem.0.weight' implies stem width 100, outside 1..64",
    )


# --- B: a tensor missing from a genuine checkpoint is named -----------------------------------

# (builder, fixture, tensor to delete): one the converter looks up alone, one inside a block.
MISSING = [
    ("linear_vtn", "vtn/lin_vtn.pth", LIN_T + "cls_token"),
    ("linear_vtn", "vtn/lin_vtn_separate_kv.pth", LIN_T + "layers.1.0.fn.fn.proj_v"),
    ("linear_vtn", "vtn/lin_vtn.pth", "module.mlp_head.0.bias"),
    ("vtn", "vtn/vtn.pyth", VTN_T + "embeddings.LayerNorm.bias"),
    ("vtn", "vtn/vtn.pyth", VTN_T + "encoder.layer.1.attention.self.key_global.bias"),
    ("vtn", "vtn/vtn.pyth", "model_state.backbone.norm.bias"),
    ("vivit", "vivit/scenic_spatio_temporal.msgpack", SCENIC + "Transformer/encoder_norm/bias"),
    ("vivit", "vivit/scenic_factorised_encoder.msgpack", SCENIC + "cls_TemporalTransformer"),
    ("vivit", "vivit/scenic_factorised_encoder.msgpack",
     SCENIC + "TemporalTransformer/encoderblock_2/MlpBlock_0/Dense_1/bias"),
    ("vivit", "vivit/scenic_factorised_self_attention.msgpack",
     SCENIC + "Transformer/encoderblock_1/LayerNorm_time/scale"),
    ("vivit", "vivit/scenic_factorised_dot_product.msgpack", "params/embedding/bias"),
    ("vivit", "vivit/hf_legacy", "vivit.encoder.layer.1.output.dense.bias"),
    ("vivit", "vivit/hf_v5", "vivit.layers.1.mlp.fc2.bias"),
    ("vivit", "vivit/hf_v5", "vivit.layernorm.bias"),
    ("laps", "laps/vit_laps_tiny.pth", LAPS + "norm.bias"),
    ("laps", "laps/vit_laps_tiny.pth", LAPS + "blocks.3.attn.proj.bias"),
    ("laps", "laps/visformer_laps_tiny.pth", LAPS + "patch_embed2.norm.bn.running_var"),
    ("laps", "laps/visformer_laps_tiny.pth", LAPS + "stage3.1.mlp.conv3.weight"),
]


def _build(builder, fixture, path):
    if builder == "linear_vtn":
        extra = {} if "miil" not in fixture else dict(num_temporal_heads=2, temporal_head_dim=24)
        return LinearVTN(weights=path, **TINY_LINEAR_VTN, **extra)
    if builder == "vtn":
        return VTN(weights=path, num_frames=10, **TINY_VTN)
    if builder == "vivit":
        variant = "factorised_dot_product" if "dot_product" in fixture else None
        height = 24 if "self_attention" in fixture else 32
        return ViViT(weights=str(path), variant=variant, num_frames=8, image_size=(height, 32),
                     num_classes=5)
    backbone = "visformer_small" if "visformer" in fixture else "vit_base"
    return LAPSTransformer(backbone, weights=path, **LAPS_TINY[backbone])


@pytest.mark.parametrize("builder,fixture,tensor", MISSING, ids=[m[2] for m in MISSING])
def test_a_missing_tensor_is_named(tmp_path, builder, fixture, tensor):
    if fixture.startswith("vivit/hf"):
        path = _hf_folder(tmp_path, fixture.split("/")[1], edit=lambda state: state.pop(tensor))
    else:
        state = _read(fixture)
        del state[tensor]
        path = (_flax_file if fixture.endswith(".msgpack") else _torch_file)(
            tmp_path, state, Path(fixture).name
        )
    with pytest.raises(CheckpointError) as info:
        _build(builder, fixture, path)
    message = str(info.value)
    assert f"Missing tensor {tensor!r}" in message
    assert str(path) in message
    assert "truncated or partial" in message
