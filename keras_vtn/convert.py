"""Original checkpoint -> Keras: `convert(src, output)` and `convert_to_preset(src, folder)`.

`OUT.weights.h5` holds the weights only; the architecture they need (family and builder
arguments) is written beside it as `OUT.config.json`, from which `keras_vtn.load_model(OUT)`
rebuilds the model. `OUT.keras` holds both in one file. A preset folder holds the model with
its class names, sampling protocol and the source checkpoint's checksum
(`keras_vtn.VideoClassifier.from_preset` reads it). `keras-vtn convert` is
`keras_vtn.cli.convert`.
"""

from __future__ import annotations

import hashlib
import json
import os

from keras_vtn.io_utils import atomic_path, write_json
from keras_vtn.models import families
from keras_vtn.weights import registry
from keras_vtn.weights.errors import CheckpointError

OUTPUT_SUFFIXES = (".weights.h5", ".keras")
_CONFIG_SUFFIX = ".config.json"
_CONFIG_FORMAT = "keras_vtn.model_config"

def model_config_path(weights_path: str | os.PathLike) -> str:
    """Where the architecture of `NAME.weights.h5` is recorded: `NAME.config.json`."""
    path = os.fspath(weights_path)
    stem = path[: -len(".weights.h5")] if path.endswith(".weights.h5") else path
    return stem + _CONFIG_SUFFIX


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # NumPy scalars
        return value.item()
    return value


def write_model_config(weights_path: str | os.PathLike, family: str, config: dict) -> str:
    """Records `family` and the builder arguments beside `weights_path` (atomically)."""
    target = model_config_path(weights_path)
    payload = {"format": _CONFIG_FORMAT, "family": family, "config": _jsonable(config),
               "weights": os.path.basename(os.fspath(weights_path))}
    write_json(target, payload, indent=2, sort_keys=True)
    return target


def read_model_config(weights_path: str | os.PathLike) -> tuple[str, dict]:
    """`(family, builder arguments)` recorded beside a converted `.weights.h5`."""
    target = model_config_path(weights_path)
    if not os.path.exists(os.fspath(weights_path)):
        raise FileNotFoundError(2, "No weights file", os.fspath(weights_path))
    if not os.path.exists(target):
        raise FileNotFoundError(
            f"{target!r} is missing: it records which architecture {os.fspath(weights_path)!r} "
            "fits (`keras-vtn convert` writes it). Without it, build the model yourself with "
            "the same arguments and pass weights=PATH, e.g. keras_vtn.ViViT(weights=PATH, ...)."
        )
    try:
        with open(target, encoding="utf-8") as handle:
            payload = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{target!r} is not valid JSON ({error}).") from None
    if (not isinstance(payload, dict) or payload.get("format") != _CONFIG_FORMAT
            or not isinstance(payload.get("config"), dict)
            or payload.get("family") not in families.FAMILIES):
        raise CheckpointError(
            f"{target!r} is not a keras_vtn model config (written by `keras-vtn convert`)."
        )
    return payload["family"], payload["config"]


def convert_model(src: str, family: str | None = None, progress=None,
                  model_args: dict | None = None):
    """`(model, summary)`: the keras_vtn model holding the weights of the original checkpoint
    `src` (a file, a folder, or with `family` a registry name such as `k400`).

    `model_args` are builder arguments the checkpoint does not store (LAPS head counts, clip
    size); they override what is read from it. `summary` holds `family`, `config` (the
    builder arguments that rebuild the model), `variables`, `parameters`, `source` (the local
    checkpoint path) and `format`.
    """
    from keras_vtn.weights import download, loading, readers

    def tick(value: float) -> None:
        if progress is not None:
            progress(value)

    path = os.path.expanduser(src)
    if not os.path.exists(path):
        if family is None:
            raise ValueError(
                f"{src!r} is not a file or folder; check the path, or pass --family to fetch "
                "a registry name such as k400."
            )
        entry = registry.find_entry(src, family)
        path = download.fetch_entry(entry)
    fmt = readers.sniff_format(path)
    if fmt in loading.KERAS_FORMATS:
        raise ValueError(f"{src!r} is already a Keras file ({fmt}); nothing to convert.")
    tick(5)
    state = readers.read_checkpoint(path)
    tick(40)
    family = family or families.detect_family(state)
    spec = families.get_family(family)
    if fmt == "hf_folder":
        # Head counts and activations are in config.json, not in the tensors.
        config = spec.config_from_checkpoint(state, readers.read_hf_config(path))
    else:
        config = spec.config_from_checkpoint(state)
    config = {**config, **(model_args or {})}
    builder, converter = families.get_builder(family), spec.convert
    model = builder(weights=None, **config)
    # Position tables are saved at this clip size, so a rebuild must use the same one.
    config.update(_clip_size(model))
    tick(50)
    mapping = converter(state, model)
    tick(60)
    total = max(len(mapping), 1)
    report = loading.assign_weights(model, mapping, progress=lambda i: tick(60 + 35 * i / total))
    return model, {"family": family, "config": config, "variables": len(report.assigned),
                   "parameters": int(model.count_params()), "source": path, "format": fmt}


def convert(src: str, output: str, family: str | None = None, progress=None,
            model_args: dict | None = None) -> dict:
    """Convert `src` into `output` (`.weights.h5` + `.config.json`, or `.keras`).

    `model_args` are builder arguments the checkpoint does not store (LAPS head counts, clip
    size); they override what is read from it. Returns a short summary dict.
    """
    from keras_vtn.weights import loading

    if not output.endswith(OUTPUT_SUFFIXES):
        raise ValueError(
            f"output {output!r} must end with .weights.h5 (weights, architecture in "
            ".config.json beside) or .keras (whole model)."
        )
    model, summary = convert_model(src, family, progress, model_args)
    config_path = None
    if output.endswith(".keras"):
        with atomic_path(output, suffix=".keras") as tmp:
            model.save(tmp)
    else:
        loading.save_weights_atomically(model, output)
        config_path = write_model_config(output, summary["family"], summary["config"])
    if progress is not None:
        progress(100)
    return {
        "family": summary["family"],
        "config": summary["config"],
        "variables": summary["variables"],
        "parameters": summary["parameters"],
        "output": output,
        "config_path": config_path,
    }


def read_label_file(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one per line (blank lines skipped)."""
    with open(os.fspath(path), encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def _checkpoint_sha256(path: str) -> str:
    """sha256 of a checkpoint file; of a folder, over its files' names and sha256s (hashed
    without writing a record beside the user's files, as the download cache does)."""
    from keras_vtn.weights.download import file_sha256

    if os.path.isfile(path):
        return file_sha256(path)
    digest = hashlib.sha256()
    for folder, _, names in sorted(os.walk(path)):
        for name in sorted(names):
            file = os.path.join(folder, name)
            digest.update(f"{os.path.relpath(file, path)}:{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def _builtin_preset_of(entry: dict) -> str:
    from keras_vtn.preset_utils import builtin_presets

    for name, candidate in builtin_presets().items():
        if candidate["id"] == entry["id"]:
            return name
    raise ValueError(f"the registry entry {entry['id']!r} is not a video classifier preset.")


def materialize_preset(preset: str, preset_dir: str | os.PathLike,
                       label_names: list[str] | None = None) -> str:
    """Copies a preset (a built-in name, downloaded and converted on first use, a folder,
    `hf://` or `kaggle://`) to the folder `preset_dir`, metadata included; with
    `label_names`, under those class names. Returns the folder's path."""
    from keras_vtn.classifier import VideoClassifier

    classifier = VideoClassifier.from_preset(preset)
    metadata = {k: v for k, v in classifier.preset_metadata.items() if k != "files"}
    if label_names is not None:
        classifier = VideoClassifier(classifier.backbone, classifier.preprocessor, label_names)
        metadata.pop("labels_note", None)
    return classifier.save_to_preset(preset_dir, metadata=metadata)


def convert_to_preset(src: str, preset_dir: str | os.PathLike, family: str | None = None,
                      progress=None, model_args: dict | None = None,
                      label_names: list[str] | None = None) -> dict:
    """Converts the original checkpoint `src` into a preset folder (`VideoClassifier`).

    A registry name (`src="k400"` with `family`) gives the built-in preset of that entry: the
    released head, the original evaluation protocol, the class names of its dataset, the
    source URL and sha256. A local checkpoint gives one centre view of the model's clip size
    and the checkpoint's sha256 in `metadata.json`. `label_names` (one per head output)
    replace the class names (default: Kinetics-400's for a 400-class head, else `class_<i>`).
    Returns `{"family", "preset_dir", "source", "num_classes"}`.
    """
    from keras_vtn.classifier import VideoClassifier
    from keras_vtn.preset_utils import parity_evidence

    if not os.path.exists(os.path.expanduser(src)) and family is not None:
        entry = registry.find_entry(src, family, **(model_args or {}))
        name = _builtin_preset_of(entry)
        folder = materialize_preset(name, preset_dir, label_names)
        return {"family": family, "preset_dir": folder, "source": f"built-in preset {name}",
                "num_classes": len(VideoClassifier.from_preset(folder).label_names)}
    model, summary = convert_model(src, family, progress, model_args)
    classifier = VideoClassifier(model, label_names=label_names)
    metadata = {
        "source": {"path": os.path.abspath(summary["source"]), "format": summary["format"],
                   "sha256": _checkpoint_sha256(summary["source"])},
        "parity": parity_evidence(summary["family"]),
    }
    folder = classifier.save_to_preset(preset_dir, metadata=metadata)
    if progress is not None:
        progress(100)
    return {"family": summary["family"], "preset_dir": folder, "source": summary["source"],
            "num_classes": len(classifier.label_names)}


def _clip_size(model) -> dict:
    """`num_frames` and `image_size` of a video model's input (what the builders take)."""
    frames, height, width = families.model_clip_shape(model)
    if None in (frames, height, width):
        return {}
    return {"num_frames": frames, "image_size": height if height == width else [height, width]}
