"""The sampling protocol a model is evaluated with: where it comes from and how it reads.

A protocol is the `video_dataset` keyword arguments of `PROTOCOL_FIELDS` (sampling, frames,
stride or fps, crop size, short side, clips, crops). A training run records it in the
`config.json` next to its `model.keras` (and its class names in `labels.txt`); the weight
registry records the original evaluation of released weights. The command line, the
`VideoPreprocessor` and the `VideoClassifier` read it from here.

>>> describe_protocol(dict(sampling="uniform", num_frames=8, image_size=160, num_clips=1,
...                        num_crops=1))
'protocol: uniform 8 frames, 160 px, 1 clip × 1 crop'
"""

from __future__ import annotations

import json
import os

PROTOCOL_FIELDS = ("sampling", "num_frames", "frame_stride", "target_fps", "image_size",
                   "short_side", "num_clips", "num_crops")


def parse_model_args(items: list[str]) -> dict:
    """`["num_heads=6", "variant=spatio_temporal"]` -> `{"num_heads": 6, "variant": "..."}`.

    Values are read as JSON where they parse (numbers, booleans, lists), else kept as text.
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"--model-arg {item!r}: expected KEY=VALUE, e.g. num_heads=6.")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def read_run_config(model_path: str | os.PathLike | None) -> tuple[dict, str | None]:
    """`(config, path)` of the training run's `config.json` next to the model (`({}, None)`)."""
    if not model_path:
        return {}, None
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
    if not os.path.isfile(path):
        return {}, None
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if not isinstance(config, dict):
        raise SystemExit(f"{path} is not a training run's config (a JSON object).")
    return config, path


def run_labels_path(model_path: str | os.PathLike) -> str | None:
    """The training run's `labels.txt` next to a saved model, if there is one.

    Data for evaluating or fine-tuning that model are labelled onto these names
    (`video_dataset(..., label_names=...)`), not onto the data's own sorted class names.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "labels.txt")
    return path if os.path.isfile(path) else None


def resolve_protocol(args, model, run_config: dict | None = None,
                     config_path: str | None = None) -> dict:
    """The sampling protocol: flags, else the run's `config.json` (or the registry entry of
    `--weights`), else the model's input shape and defaults.

    `args` holds the command line's flags (`PROTOCOL_FIELDS`, and `family`, `weights`,
    `model`, `model_arg` for the registry); a field that is None or absent is not given.
    Returns the `video_dataset` keyword arguments of `PROTOCOL_FIELDS` (`short_side` None
    means the dataset's default) plus `"source"`, a phrase saying where they came from.
    """
    from keras_vtn.models.families import model_clip_shape

    run_config = run_config or {}
    recorded = {key: run_config.get(key) for key in PROTOCOL_FIELDS[:6]}
    recorded["num_clips"] = run_config.get("val_num_clips")
    recorded["num_crops"] = run_config.get("val_num_crops")
    recorded = {k: v for k, v in recorded.items() if v is not None}
    recorded_from = config_path if recorded else None
    if not recorded:
        recorded, recorded_from = registry_protocol(args)
    frames, height, _ = model_clip_shape(model)
    # a model built for a fixed clip takes only that clip, whatever else was recorded
    for key, fixed in (("num_frames", frames), ("image_size", height)):
        if fixed is not None and recorded.get(key, fixed) != fixed:
            recorded.pop(key)
    protocol = {"sampling": "dense", "num_frames": frames or 16, "frame_stride": 2,
                "target_fps": None, "image_size": height or 224, "short_side": None,
                "num_clips": 1, "num_crops": 1}
    protocol.update(recorded)
    given = {k: getattr(args, k) for k in PROTOCOL_FIELDS if getattr(args, k, None) is not None}
    protocol.update(given)
    short = protocol["short_side"]
    if isinstance(short, (list, tuple)) and "short_side" not in given:
        # a training scale-jitter range: evaluate at its low end, as the run's validation
        # did (three crops cover the long side, so never below the crop)
        low = int(short[0])
        protocol["short_side"] = max(low, protocol["image_size"]) if protocol["num_crops"] == 3 \
            else low
    if protocol["sampling"] == "time" and not protocol["target_fps"]:
        raise SystemExit("time sampling needs --target-fps")
    parts = []
    if recorded and recorded_from:
        parts.append(f"from {recorded_from}")
    if given:
        parts.append(", ".join("--" + k.replace("_", "-") for k in given))
    if not parts:
        parts.append("defaults and the model's input shape: no config.json next to the model, "
                     "no registry protocol")
    protocol["source"] = "; ".join(parts)
    return protocol


def registry_protocol(args) -> tuple[dict, str | None]:
    """`(fields, source)` of the protocol the weight registry records for `--family F
    --weights NAME` (the original evaluation's frames, stride or fps, sizes and views), or
    `({}, None)` when there is no such entry or its candidates disagree."""
    import inspect

    from keras_vtn.models.families import get_builder
    from keras_vtn.weights import registry

    family, name = getattr(args, "family", None), getattr(args, "weights", None)
    if not family or not name or getattr(args, "model", None):
        return {}, None
    entries = registry.list_weights(family=family, name=name)
    if not entries:
        return {}, None
    given = parse_model_args(getattr(args, "model_arg", []) or [])
    try:
        parameters = inspect.signature(get_builder(family)).parameters
    except ValueError:  # an unknown family says so when the model is built
        parameters = {}

    def wanted(key):
        if key in given:
            return given[key]
        default = parameters[key].default if key in parameters else None
        return None if default is inspect.Parameter.empty else default

    fitting = [e for e in entries
               if all(wanted(k) in (None, v) for k, v in e.get("match", {}).items())]
    found = {json.dumps(entry_protocol(e), sort_keys=True) for e in fitting}
    if len(found) != 1:
        return {}, None
    fields = json.loads(found.pop())
    return fields, (f"the registry entry of {family} weights {name!r}" if fields else None)


def entry_protocol(entry: dict) -> dict:
    """The protocol fields a registry entry states (evaluation frames recorded without a
    stride or clip length span the whole video: uniform sampling).

    >>> fields = entry_protocol({"preprocessing": {"num_frames": 8, "frame_stride": 4},
    ...                          "eval_views": {"clips": 4, "crops": 3}})
    >>> fields
    {'sampling': 'dense', 'num_frames': 8, 'frame_stride': 4, 'num_clips': 4, 'num_crops': 3}
    """
    pre, views = entry.get("preprocessing") or {}, entry.get("eval_views") or {}
    out = {}
    frames = pre.get("num_frames")
    frames = frames.get("eval") if isinstance(frames, dict) else frames
    if isinstance(frames, int) and isinstance(pre.get("frame_stride"), int):
        out.update(sampling="dense", num_frames=frames, frame_stride=pre["frame_stride"])
    elif isinstance(frames, int) and isinstance(pre.get("clip_seconds"), (int, float)):
        out.update(sampling="time", num_frames=frames, target_fps=frames / pre["clip_seconds"])
    elif isinstance(frames, int):
        # frames with neither stride nor clip length span the whole video (VTN's 250-frame
        # evaluation): what the sampler calls uniform
        out.update(sampling="uniform", num_frames=frames)
    if isinstance(pre.get("resize_short_side"), int):
        out["short_side"] = pre["resize_short_side"]
    if isinstance(pre.get("crop_size"), int):
        out["image_size"] = pre["crop_size"]
    if isinstance(views.get("clips"), int):
        out["num_clips"] = views["clips"]
    if views.get("crops") in (1, 3):
        out["num_crops"] = views["crops"]
    return out


def describe_protocol(protocol: dict) -> str:
    """One line, e.g. `protocol: dense 16×4, 224 px, 4 clips × 3 crops (from runs/x/config.json)`.

    >>> describe_protocol(dict(sampling="dense", num_frames=16, frame_stride=4, target_fps=None,
    ...                        image_size=224, short_side=None, num_clips=4, num_crops=3,
    ...                        source="from runs/x/config.json"))
    'protocol: dense 16×4, 224 px, 4 clips × 3 crops (from runs/x/config.json)'
    """
    sampling, frames = protocol["sampling"], protocol["num_frames"]
    if sampling == "dense":
        clip = f"dense {frames}×{protocol['frame_stride']}"
    elif sampling == "time":
        clip = f"time {frames} frames at {protocol['target_fps']:g} fps"
    else:
        clip = f"uniform {frames} frames"
    size = f"{protocol['image_size']} px"
    if protocol.get("short_side"):
        size += f" (short side {protocol['short_side']})"
    clips, crops = protocol["num_clips"], protocol["num_crops"]
    views = f"{clips} clip{'s' if clips != 1 else ''} × {crops} crop{'s' if crops != 1 else ''}"
    source = f" ({protocol['source']})" if protocol.get("source") else ""
    return f"protocol: {clip}, {size}, {views}{source}"


def protocol_kwargs(protocol: dict) -> dict:
    """The `video_dataset` keyword arguments of a resolved protocol."""
    kwargs = {k: protocol[k] for k in PROTOCOL_FIELDS if k != "short_side"}
    if protocol.get("short_side"):
        kwargs["short_side"] = protocol["short_side"]
    return kwargs
