"""Worker process for the reference (original PyTorch) implementations.

Run by `benchmarks.models` with the reference interpreter (`--reference-python`, an environment
with torch==2.13.0 and the reference's own dependencies). It imports no keras. Builders:

- `hf_vivit`: Hugging Face `transformers.VivitForVideoClassification` (pip; ViViT Model 1).
- `elb3k_linear_vtn`: `model.VTN` of a github.com/elb3k/vtn checkout (configs/lin-vtn.yaml).
- `bomri_vtn`: `slowfast.models.video_model_builder.VTN` of a github.com/bomri/SlowFast
  checkout (configs/Kinetics/VIT_B_VTN.yaml).
- `laps_vit`, `laps_visformer` (+ `_plain2d`): a github.com/VideoNetworks/LAPS-transformer
  checkout (its vendored timm `vit_laps` and `visformer.models_LAPS`, wrapped in `VideoNet`).

Checkouts are found among the `reference_dirs` given (each directory and its immediate
subdirectories are searched), so `--reference-dir /path/to/checkouts` is enough. Weights are
random (speed does not depend on them); nothing is downloaded.
"""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

from benchmarks.harness import emit, load_average, rss_mb, time_calls, time_spec

# Files that identify each checkout.
MARKERS = {
    "elb3k": ("model.py", "linformer"),
    "bomri": ("slowfast/models/video_model_builder.py", "slowfast/models/vtn_helper.py"),
    "laps": ("visformer/models_LAPS.py", "timm/models/vit_laps.py"),
}
REFERENCE_CHECKOUT = {
    "elb3k_linear_vtn": "elb3k",
    "bomri_vtn": "bomri",
    "laps_vit": "laps",
    "laps_visformer": "laps",
    "laps_vit_plain2d": "laps",
    "laps_visformer_plain2d": "laps",
}


class ReferenceUnavailable(RuntimeError):
    """The reference cannot run here (missing package or checkout); the message says why."""


def find_checkout(kind: str, reference_dirs) -> Path:
    candidates = []
    for d in map(Path, reference_dirs or []):
        candidates.append(d)
        if d.is_dir():
            candidates.extend(sorted(p for p in d.iterdir() if p.is_dir()))
    for c in candidates:
        if all((c / m).exists() for m in MARKERS[kind]):
            return c
    raise ReferenceUnavailable(
        f"no {kind} checkout (needs {', '.join(MARKERS[kind])}) in --reference-dir "
        f"{list(map(str, reference_dirs or []))}"
    )


def _stub(name: str, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


class _Anything(type):
    """Stand-in class for torchvision names: any attribute is another stand-in."""

    def __getattr__(cls, name):
        return _stand_in(name)


def _stand_in(name: str) -> _Anything:
    # Dunder lookups must fail as on a real module: `inspect` (run by torch.library while
    # torch.distributed imports, in training mode) reads every module's `__file__`.
    if name.startswith("__"):
        raise AttributeError(name)
    return _Anything(name, (), {"__init__": lambda self, *a, **k: None})


def _stub_torchvision() -> None:
    """timm 0.4 and elb3k import torchvision for data transforms only; torch 2.13 has no CPU
    torchvision wheel, so give them stand-ins when the real package is absent or broken."""
    try:
        import torchvision  # noqa: F401

        return
    except Exception:  # noqa: BLE001 - missing or built for another torch
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]

    for name in (
        "torchvision",
        "torchvision.transforms",
        "torchvision.transforms.functional",
        "torchvision.transforms.transforms",
        "torchvision.datasets",
        "torchvision.io",
    ):
        module = _stub(name)
        module.__getattr__ = _stand_in
        module.__path__ = []
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    sys.modules["torchvision.transforms"].functional = sys.modules[
        "torchvision.transforms.functional"
    ]


def _hf_vivit(kwargs: dict, batch: int, dirs):
    try:
        import transformers
        from transformers import VivitConfig, VivitForVideoClassification
    except ImportError as err:
        raise ReferenceUnavailable(
            "transformers is not installed (pip install transformers): HF ViViT reference "
            f"skipped ({err})"
        ) from err
    tubelet = kwargs.get("tubelet_size", (2, 16, 16))
    config = VivitConfig(
        image_size=kwargs.get("image_size", 224),
        num_frames=kwargs.get("num_frames", 32),
        tubelet_size=list(tubelet),
        hidden_size=kwargs.get("hidden_dim", 768),
        num_hidden_layers=kwargs.get("num_layers", 12),
        num_attention_heads=kwargs.get("num_heads", 12),
        intermediate_size=kwargs.get("mlp_dim", 3072),
        num_labels=kwargs.get("num_classes", 400),
    )
    model = VivitForVideoClassification(config)
    frames, size = config.num_frames, config.image_size
    x = _torch_randn(batch, frames, 3, size, size)
    info = {
        "transformers": transformers.__version__,
        "attn_implementation": getattr(config, "_attn_implementation", None),
    }
    return model, (lambda m: m(pixel_values=x).logits), info


def _torch_randn(*shape):
    import torch

    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _elb3k(kwargs: dict, batch: int, dirs):
    root = find_checkout("elb3k", dirs)
    sys.path.insert(0, str(root))
    _stub_torchvision()
    try:
        import model as elb3k_model
        import timm
    except ImportError as err:
        raise ReferenceUnavailable(f"elb3k reference needs timm==0.4.12, einops: {err}") from err
    create = timm.create_model
    # Random weights: no download (the original asks for pretrained=True).
    elb3k_model.timm = types.SimpleNamespace(
        create_model=lambda name, pretrained=False, **kw: create(name, pretrained=False, **kw)
    )
    frames = kwargs.get("num_frames", 16)
    net = elb3k_model.VTN(
        frames=frames,
        num_classes=400,
        img_size=224,
        patch_size=16,
        spatial_frozen=False,
        spatial_size="base",
        spatial_args=dict(img_size=224, in_chans=3, attn_drop_rate=0.0, drop_rate=0.0),
        temporal_type="linformer",
        temporal_args=dict(  # configs/lin-vtn.yaml
            k=8, dim=768, depth=3, heads=12, dim_head=128, mlp_dim=3072, one_kv_head=True,
            share_kv=True, dropout=0.1, emb_dropout=0.5,
        ),
    )
    x = _torch_randn(batch, frames, 3, 224, 224)
    return net, (lambda m: m(x)), {"checkout": str(root), "timm": timm.__version__}


def _bomri(kwargs: dict, batch: int, dirs):
    root = find_checkout("bomri", dirs)
    try:
        from transformers import LongformerModel  # noqa: F401  (before the detectron2 stub)

        _stub_torchvision()
        from timm.models import vision_transformer
    except ImportError as err:
        raise ReferenceUnavailable(f"bomri VTN needs transformers and timm: {err}") from err

    class Registry:
        def __init__(self, name):
            self._map = {}

        def register(self, obj=None):
            if obj is None:
                return lambda o: self.register(o)
            self._map[obj.__name__] = obj
            return obj

    # PySlowFast's package __init__ files pull fvcore/detectron2 logging; the model needs none.
    _stub("fvcore")
    _stub("fvcore.common")
    _stub("fvcore.common.registry", Registry=Registry)
    _stub("fvcore.nn")
    _stub("fvcore.nn.weight_init", c2_msra_fill=lambda m: None)
    _stub("detectron2")
    _stub("detectron2.layers", ROIAlign=object)
    sys.path.insert(0, str(root))
    for pkg in ("slowfast", "slowfast.utils", "slowfast.models"):
        _stub(pkg).__path__ = [str(root / pkg.replace(".", "/"))]
    from slowfast.models import video_model_builder as vmb

    vit = vision_transformer.vit_base_patch16_224
    vmb.vit_base_patch16_224 = lambda pretrained=False, **kw: vit(pretrained=False, **kw)
    ns = types.SimpleNamespace
    cfg = ns(  # configs/Kinetics/VIT_B_VTN.yaml
        MODEL=ns(ARCH="VIT", NUM_CLASSES=400, DROPOUT_RATE=0.5),
        VTN=ns(
            PRETRAINED=False, DROP_PATH_RATE=0.0, DROP_RATE=0.0, HIDDEN_DIM=768, MLP_DIM=768,
            MAX_POSITION_EMBEDDINGS=288, NUM_ATTENTION_HEADS=12, NUM_HIDDEN_LAYERS=3,
            ATTENTION_MODE="sliding_chunks", PAD_TOKEN_ID=-1, ATTENTION_WINDOW=[18, 18, 18],
            INTERMEDIATE_SIZE=3072, ATTENTION_PROBS_DROPOUT_PROB=0.1, HIDDEN_DROPOUT_PROB=0.1,
        ),
    )
    import torch

    net = vmb.VTN(cfg)
    frames = kwargs.get("num_frames", 16)
    x = _torch_randn(batch, 3, frames, 224, 224)  # (B, C, F, H, W) as PySlowFast feeds it
    ids = torch.arange(frames).expand(batch, -1)
    return net, (lambda m: m([x, ids])), {"checkout": str(root)}


def _laps(kwargs: dict, batch: int, dirs, backbone: str, plain: bool):
    root = find_checkout("laps", dirs)
    sys.path.insert(0, str(root))
    # timm.data imports PIL/torchvision for augmentation only; the models need the constants.
    _stub(
        "timm.data",
        IMAGENET_DEFAULT_MEAN=(0.485, 0.456, 0.406),
        IMAGENET_DEFAULT_STD=(0.229, 0.224, 0.225),
        IMAGENET_INCEPTION_MEAN=(0.5, 0.5, 0.5),
        IMAGENET_INCEPTION_STD=(0.5, 0.5, 0.5),
        IMAGENET_DPN_MEAN=(124 / 255, 117 / 255, 104 / 255),
        IMAGENET_DPN_STD=tuple([1 / (0.0167 * 255)] * 3),
    )
    for name in [m for m in sys.modules if m == "timm" or m.startswith("timm.models")]:
        del sys.modules[name]  # use the checkout's vendored timm, not an installed one
    try:
        from model.video_net import VideoNet
        from timm.models import vit_laps
        from visformer import models_LAPS
    except ImportError as err:
        raise ReferenceUnavailable(f"LAPS reference needs einops: {err}") from err
    frames = kwargs.get("num_frames", 8)
    if backbone == "vit_base":
        levels = [None] * 12 if plain else [1, 2, 3, 1] * 3
        base = vit_laps.VisionTransformer(
            img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
            qkv_bias=True, num_classes=400, n_seg=frames, fold_div=0 if plain else 4,
            s2_skip_level=levels,
        )
    else:
        s2, s3 = ([None] * 4, [None] * 4) if plain else ([1, 2, 3, 1], [2, 3, 1, 2])
        base = models_LAPS.visformer_small(
            num_classes=400, n_seg=frames, fold_div=0 if plain else 4, s2_skip_level=s2,
            s3_skip_level=s3,
        )
    net = VideoNet(400, frames, "RGB", backbone="vit_fixture", net="none", consensus_type="avg")
    net.base_model = base
    x = _torch_randn(batch, frames, 3, 224, 224)
    return net, (lambda m: m(x)), {"checkout": str(root)}


BUILDERS = {
    "hf_vivit": _hf_vivit,
    "elb3k_linear_vtn": _elb3k,
    "bomri_vtn": _bomri,
    "laps_vit": lambda k, b, d: _laps(k, b, d, "vit_base", False),
    "laps_visformer": lambda k, b, d: _laps(k, b, d, "visformer_small", False),
    "laps_vit_plain2d": lambda k, b, d: _laps(k, b, d, "vit_base", True),
    "laps_visformer_plain2d": lambda k, b, d: _laps(k, b, d, "visformer_small", True),
}


def torch_matmul_peak(n: int = 2048, repeats: int = 10) -> dict:
    import torch

    a, b = _torch_randn(n, n), _torch_randn(n, n)
    timing = time_calls(lambda: torch.mm(a, b), repeats, warmup=2)
    return {"library": "torch", "n": n, "gflops": 2 * n**3 / timing["median_s"] / 1e9, **timing}


def torch_flop_count(model, forward) -> int | None:
    """FLOPs of one forward by torch's FlopCounterMode on meta tensors (a cross-check)."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            forward(model)
        return int(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - the cross-check is optional
        return None


def prepare(spec: dict) -> tuple[dict, object, object, object]:
    """Builds the spec's reference: (facts, blocking call of one step, model, forward)."""
    import torch

    batch = int(spec.get("batch", 1))
    t0 = time.perf_counter()
    model, forward, info = BUILDERS[spec["reference"]](
        spec.get("kwargs", {}), batch, spec.get("dirs")
    )
    facts = dict(info=info, build_s=time.perf_counter() - t0)
    facts["params"] = int(sum(p.numel() for p in model.parameters()))
    facts["rss_after_build_mb"] = rss_mb()
    mode = spec.get("mode", "forward")
    if mode == "forward":
        model.eval()

        def call():
            with torch.inference_mode():
                forward(model)

    else:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        target = torch.arange(batch) % 400

        def call():
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(forward(model), target)
            loss.backward()
            optimizer.step()

    return facts, call, model, forward


def main(spec: dict) -> dict:
    import torch

    result = {"spec": spec, "backend": "torch-reference", "torch": torch.__version__}
    result["load_average_start"] = load_average()
    if spec.get("matmul_peak", True):
        result["matmul_peak"] = torch_matmul_peak()
    result["rss_after_imports_mb"] = rss_mb()
    try:
        facts, call, model, forward = prepare(spec)
        result.update(facts)
        result.update(time_spec(spec, call, lambda other: prepare(other)[:2]))
    except ReferenceUnavailable as err:
        result["skipped"] = str(err)
        return result
    result["rss_end_mb"] = rss_mb()
    mode = spec.get("mode", "forward")
    if spec.get("count_flops", False) and mode == "forward":
        model.eval()
        result["torch_flop_counter_flops"] = torch_flop_count(model, forward)
    result["threads"] = torch.get_num_threads()
    return result


if __name__ == "__main__":
    emit(main(json.loads(sys.argv[1])))
