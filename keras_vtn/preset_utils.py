"""Presets: a classifier (or backbone) as one folder, and the built-in ones.

A preset is a folder in keras-hub's layout:

- `config.json`: the backbone's architecture (family and merged builder config);
- `model.weights.h5`: the backbone's weights, head included;
- `preprocessor.json`: the `VideoPreprocessor` (sampling, views, aggregation, normalisation);
- `labels.json`: the class names, one per head output;
- `metadata.json`: keras_vtn version, family, source checkpoint (URL, sha256), conversion
  parity evidence, reported accuracy with its view protocol, licence note, and the sha256 of
  every other file (a damaged or partial folder is refused by name).

`preset` arguments accept a built-in name (`presets()`: converted from the original
checkpoint of the weight registry on first use, then read from the cache), a local folder,
`hf://owner/repo[@revision]` (`huggingface_hub`) or `kaggle://owner/model/keras/variant[/N]`
(`kagglehub`); the hub clients come with `pip install keras-vtn[hub]`.

`python -m keras_vtn.preset_utils --markdown` prints the model-zoo table of the README.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import json
import os
import secrets
import shutil
from typing import Any

import keras

PRESET_FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
PREPROCESSOR_FILE = "preprocessor.json"
LABELS_FILE = "labels.json"
METADATA_FILE = "metadata.json"
CHECKED_FILES = (CONFIG_FILE, WEIGHTS_FILE, PREPROCESSOR_FILE, LABELS_FILE)
HUB_EXTRA = "pip install 'keras-vtn[hub]'"


class PresetError(ValueError):
    """A preset that cannot be used as it is (damaged, partial, of another version, ...)."""


def _version() -> str:
    from keras_vtn import __version__

    return __version__


def compatible_versions(version: str) -> str:
    """The keras_vtn versions whose presets `version` reads: the same major.minor release
    (before 1.0 a minor release may change the preset format)."""
    major, minor = version.split(".")[:2]
    return f"{major}.{minor}.x"


def _compatible(theirs: str, ours: str) -> bool:
    return theirs.split(".")[:2] == ours.split(".")[:2]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: str, payload) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def _remove_stale_writes(parent: str, base: str) -> None:
    """Removes the temporary and replaced folders of `base` left by killed writers on this
    host (those of a live process, or of another host sharing the cache, are left alone)."""
    from keras_vtn.weights.download import _HOST, _pid_alive

    prefixes = tuple(f".{base}.{kind}-{_HOST}-" for kind in ("tmp", "old"))
    for name in os.listdir(parent):
        if not name.startswith(prefixes):
            continue
        pid = name.split(f"-{_HOST}-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


@contextlib.contextmanager
def _atomic_folder(target: str):
    """Yields a hidden temporary folder beside `target` that replaces it on success."""
    from keras_vtn.weights.download import _HOST

    target = os.path.abspath(target)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    _remove_stale_writes(parent, os.path.basename(target))
    token = f"{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp = os.path.join(parent, f".{os.path.basename(target)}.tmp-{token}")
    os.makedirs(tmp)
    try:
        yield tmp
        for name in os.listdir(tmp):
            with open(os.path.join(tmp, name), "rb") as handle:
                os.fsync(handle.fileno())
        old = None
        if os.path.exists(target):
            if not os.path.isdir(target):
                raise PresetError(f"{target!r} exists and is not a folder.")
            old = os.path.join(parent, f".{os.path.basename(target)}.old-{token}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------- writing


def save_preset(model, preset_dir: str | os.PathLike, *,
                metadata: dict[str, Any] | None = None) -> str:
    """Writes a `VideoClassifier` (or a bare backbone) as a preset folder, atomically: the
    files go to a temporary folder beside `preset_dir`, renamed onto it when complete."""
    from keras_vtn.classifier import VideoClassifier, backbone_spec, default_label_names
    from keras_vtn.preprocessing import VideoPreprocessor

    if isinstance(model, VideoClassifier):
        backbone, preprocessor, labels = model.backbone, model.preprocessor, model.label_names
    else:
        backbone = model
        preprocessor = VideoClassifier(model).preprocessor
        labels = default_label_names(int(model.output_shape[-1]))
    assert isinstance(preprocessor, VideoPreprocessor)
    spec = backbone_spec(backbone)
    with _atomic_folder(os.fspath(preset_dir)) as tmp:
        _write_json(os.path.join(tmp, CONFIG_FILE), spec)
        backbone.save_weights(os.path.join(tmp, WEIGHTS_FILE))
        _write_json(os.path.join(tmp, PREPROCESSOR_FILE), preprocessor.get_config())
        _write_json(os.path.join(tmp, LABELS_FILE), list(labels))
        meta = {
            "keras_vtn_version": _version(),
            "preset_format": PRESET_FORMAT,
            "keras_version": keras.__version__,
            "family": spec.get("family"),
            "num_classes": len(labels),
            "protocol": preprocessor.describe(),
            "source": None, "parity": None, "reported": None, "license": None,
            **(metadata or {}),
            "files": {name: _sha256(os.path.join(tmp, name)) for name in CHECKED_FILES},
        }
        _write_json(os.path.join(tmp, METADATA_FILE), meta)
    return os.path.abspath(os.fspath(preset_dir))


# ------------------------------------------------------------------------------- reading


def _read_json(folder: str, name: str):
    path = os.path.join(folder, name)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise PresetError(f"preset {folder!r}: {name} is damaged (not valid JSON: {error}); "
                          "copy or download the preset again.") from None


def read_preset(folder: str | os.PathLike) -> dict[str, Any]:
    """The checked contents of a preset folder: `spec`, `preprocessor`, `labels`,
    `metadata` and `weights` (the weights file's path)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"No preset folder {folder!r}.")
    missing = [n for n in (METADATA_FILE, *CHECKED_FILES)
               if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise PresetError(
            f"preset {folder!r} is incomplete: {', '.join(missing)} missing (a preset holds "
            f"{', '.join((*CHECKED_FILES, METADATA_FILE))}); copy or download the whole "
            "folder again.")
    metadata = _read_json(folder, METADATA_FILE)
    theirs, ours = str(metadata.get("keras_vtn_version", "unknown")), _version()
    if theirs == "unknown" or not _compatible(theirs, ours):
        raise PresetError(
            f"preset {folder!r} was written by keras_vtn {theirs}; this is keras_vtn {ours}, "
            f"which reads presets of keras_vtn {compatible_versions(ours)}. Install keras_vtn "
            f"{compatible_versions(theirs) if theirs != 'unknown' else 'of that release'} to "
            "use it, or convert the original checkpoint again with this version.")
    recorded = metadata.get("files") or {}
    for name in CHECKED_FILES:
        if name not in recorded:
            raise PresetError(f"preset {folder!r}: metadata.json records no checksum for "
                              f"{name}; the preset is damaged.")
        if _sha256(os.path.join(folder, name)) != recorded[name]:
            raise PresetError(
                f"preset {folder!r}: {name} does not match the sha256 in metadata.json (the "
                "file is damaged or was only partly copied); copy or download the preset "
                "again.")
    labels = _read_json(folder, LABELS_FILE)
    if not isinstance(labels, list) or not all(isinstance(n, str) for n in labels):
        raise PresetError(f"preset {folder!r}: {LABELS_FILE} must be a list of class names.")
    return {"spec": _read_json(folder, CONFIG_FILE),
            "preprocessor": _read_json(folder, PREPROCESSOR_FILE), "labels": labels,
            "metadata": metadata, "weights": os.path.join(folder, WEIGHTS_FILE)}


def _load_backbone(contents: dict[str, Any], folder: str) -> keras.Model:
    from keras_vtn.classifier import backbone_from_spec

    backbone = backbone_from_spec(contents["spec"])
    heads = int(backbone.output_shape[-1])
    if heads != len(contents["labels"]):
        raise PresetError(
            f"preset {folder!r}: {LABELS_FILE} names {len(contents['labels'])} classes but the "
            f"backbone's head has {heads} outputs; the labels belong to another model.")
    backbone.load_weights(contents["weights"])
    return backbone


def load_classifier(preset: str | os.PathLike, **preprocessor_overrides):
    """`VideoClassifier.from_preset`."""
    from keras_vtn.classifier import VideoClassifier
    from keras_vtn.preprocessing import VideoPreprocessor

    folder = preset_folder(preset)
    contents = read_preset(folder)
    backbone = _load_backbone(contents, folder)
    preprocessor = VideoPreprocessor.from_config(
        {**contents["preprocessor"], **preprocessor_overrides})
    classifier = VideoClassifier(backbone, preprocessor, contents["labels"])
    classifier.preset_metadata = contents["metadata"]
    return classifier


def from_preset(preset: str | os.PathLike) -> keras.Model:
    """The backbone of a preset: its family model, head included (`keras_vtn.from_preset`).

    Backbones of every family are plain Keras models built by one function per family, so
    one loader serves them all, as `keras_hub.models.Backbone.from_preset` does; the task is
    `VideoClassifier.from_preset`."""
    folder = preset_folder(preset)
    return _load_backbone(read_preset(folder), folder)


# ------------------------------------------------------------------------------- locations


def preset_folder(preset: str | os.PathLike) -> str:
    """The local folder of a preset: a built-in name, a folder, `hf://` or `kaggle://`."""
    preset = os.fspath(preset)
    if preset.startswith("hf://"):
        return _hub_folder(preset)
    if preset.startswith("kaggle://"):
        return _kaggle_folder(preset)
    if os.path.isdir(preset):
        return preset
    if preset in builtin_presets():
        return _builtin_folder(preset)
    if os.path.sep in preset or preset.startswith("."):
        raise FileNotFoundError(f"No preset folder {preset!r}.")
    raise PresetError(
        f"unknown preset {preset!r}: give a preset folder, hf://owner/repo, "
        f"kaggle://owner/model/keras/variant, or a built-in name "
        f"({', '.join(sorted(builtin_presets()))}).")


def _hub_folder(preset: str) -> str:
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError(f"{preset!r} needs huggingface_hub: {HUB_EXTRA}.") from None
    repo, _, revision = preset[len("hf://"):].partition("@")
    if repo.count("/") != 1:
        raise PresetError(f"{preset!r}: write hf://owner/repo (optionally @revision).")
    return huggingface_hub.snapshot_download(repo, revision=revision or None)


def _kaggle_folder(preset: str) -> str:
    try:
        import kagglehub
    except ImportError:
        raise ImportError(f"{preset!r} needs kagglehub: {HUB_EXTRA}.") from None
    return kagglehub.model_download(preset[len("kaggle://"):])


# ------------------------------------------------------------------------------- built-ins


def _builtin_name(entry: dict) -> str:
    """The preset name of a registry entry, e.g. `vivit_fe_l16x2_k600`, `vtn_vit_b_k400`."""
    config, family = entry["config"], entry["family"]
    size = str(entry["match"].get("size", config.get("size", "base")))[0]
    if family == "vivit":
        t, p = config["tubelet_size"][0], config["tubelet_size"][1]
        variant = {"spatio_temporal": "", "factorised_encoder": "_fe"}.get(
            config["variant"], "_" + config["variant"])
        return f"vivit{variant}_{size}{p}x{t}_{entry['name']}"
    if family == "vtn":
        return f"vtn_vit_{size}_{entry['name']}"
    if family == "linear_vtn":
        return f"linear_vtn_{entry['name']}"
    return f"{family}_{entry['name']}"


def builtin_presets() -> dict[str, dict]:
    """Built-in preset name -> weight-registry entry (the released video classifiers)."""
    from keras_vtn.weights.registry import list_weights

    return {_builtin_name(e): e for e in list_weights() if e["kind"] == "video"}


def _label_names(entry: dict, num_classes: int) -> tuple[list[str], str | None]:
    from keras_vtn.classifier import default_label_names

    if entry.get("label_map") == "kinetics400":
        return default_label_names(num_classes), None
    return ([f"class_{i}" for i in range(num_classes)],
            f"keras_vtn ships no class names for {entry.get('label_map')}: labels are indices.")


def parity_evidence(family: str) -> dict[str, str]:
    """The `metadata.json` note of what shows that `family`'s converter reproduces the
    original code's logits."""
    return {
        "converter": f"keras_vtn family {family!r} converter",
        "evidence": f"tests/models/test_{family}.py: checkpoints in this original format, made "
                    "by the original code, give its logits within 2e-5 (float32 CPU; "
                    "TensorFlow, JAX and PyTorch)",
    }


def builtin_metadata(entry: dict, source_path: str | None) -> dict[str, Any]:
    """`metadata.json` fields of a built-in preset (source, parity evidence, accuracy)."""
    from keras_vtn.weights import download

    sha256 = None if source_path is None else download.source_sha256(entry, source_path)
    return {
        "source": {"registry_id": entry["id"], "description": entry.get("description"),
                   "urls": [f["url"] for f in entry["files"]], "format": entry["format"],
                   "sha256": sha256},
        "parity": parity_evidence(entry["family"]),
        "reported": entry.get("reported"),
        "license": entry.get("license"),
    }


def _builtin_folder(name: str) -> str:
    from keras_vtn.classifier import VideoClassifier
    from keras_vtn.models.families import get_builder, model_clip_shape
    from keras_vtn.preprocessing import preprocessor_from_registry
    from keras_vtn.weights import download

    folder = os.path.join(download.cache_root(), "presets", name)
    if os.path.isdir(folder):
        try:
            read_preset(folder)
            return folder
        except PresetError:  # written by another version, or damaged: converted again below
            pass
    entry = builtin_presets()[name]
    preprocessor = preprocessor_from_registry(entry)
    builder = get_builder(entry["family"])
    # the released head (a builder's num_classes default need not be the checkpoint's)
    clip = {"num_frames": preprocessor.num_frames,
            "num_classes": entry["config"].get("num_classes")}
    if "frame_indices" in inspect.signature(builder).parameters:
        clip["frame_indices"] = True  # the sampled frames' positions, as the original reads them
    backbone = builder(weights=entry["name"], **entry["match"], **clip)
    if model_clip_shape(backbone)[1] not in (None, preprocessor.image_size):
        raise PresetError(f"{name}: the registry's crop size {preprocessor.image_size} does "
                          f"not fit the model's {model_clip_shape(backbone)[1]}-pixel input.")
    labels, note = _label_names(entry, int(backbone.output_shape[-1]))
    metadata = builtin_metadata(entry, download.fetch_entry(entry))
    if note:
        metadata["labels_note"] = note
    save_preset(VideoClassifier(backbone, preprocessor, labels), folder, metadata=metadata)
    return folder


def presets() -> list[dict[str, Any]]:
    """The built-in presets: name, family, description, reported accuracy and its protocol.

    >>> [p["name"] for p in presets()][:3]
    ['vivit_b16x2_k400', 'vivit_b16x2_k400_hf', 'vivit_fe_b16x2_k400']
    """
    out = []
    for name, entry in builtin_presets().items():
        reported = entry.get("reported") or {}
        out.append({"name": name, "family": entry["family"],
                    "description": entry.get("description", ""),
                    "dataset": reported.get("dataset"), "top1": reported.get("top1"),
                    "top5": reported.get("top5"), "protocol": reported.get("views"),
                    "license": entry.get("license")})
    return out


def markdown_table() -> str:
    """The README's model-zoo table, made from `presets()`."""
    lines = ["| preset | family | dataset | top-1 | top-5 | reported protocol |",
             "|---|---|---|---|---|---|"]
    for p in presets():
        def percent(value):
            return "–" if value is None else f"{value:g}"

        lines.append(f"| `{p['name']}` | {p['family']} | {p['dataset'] or '–'} | "
                     f"{percent(p['top1'])} | {percent(p['top5'])} | {p['protocol'] or '–'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keras_vtn.preset_utils",
                                     description="List keras_vtn's built-in presets.")
    parser.add_argument("--markdown", action="store_true", help="print the README table")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table())
    else:
        for p in presets():
            top1 = "–" if p["top1"] is None else f"{p['top1']:g}%"
            print(f"{p['name']:<26} {top1:>6}  {p['protocol'] or ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
