"""`weights=` resolution and loading for every builder.

`resolve` turns a `weights=` value into a local source (downloading registry entries);
`load_weights` loads it into a built model: Keras files directly, original checkpoints through
`read_checkpoint` and the family converter, then `assign_weights`, the structural integrity gate.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keras_vtn.io_utils import atomic_path
from keras_vtn.weights import download, registry
from keras_vtn.weights.errors import (
    CheckpointError,
    FamilyNotAvailableError,
    UnknownWeightsError,
)
from keras_vtn.weights.readers import read_checkpoint, sniff_format

HEAD_PREFIX = "head/"
KERAS_FORMATS = ("keras_weights", "keras_archive")


@dataclass
class WeightsSource:
    """A resolved `weights=` value."""

    path: str
    format: str  # one of readers.sniff_format's names
    entry: dict | None = None  # the registry entry, when it came from the registry

    @property
    def is_keras(self) -> bool:
        return self.format in KERAS_FORMATS

    @property
    def partial(self) -> bool:
        """Image checkpoints initialise only part of a video model."""
        return self.format == "npz" or bool(self.entry and self.entry["kind"] == "spatial_init")


@dataclass
class AssignReport:
    """What `assign_weights` did."""

    assigned: list[str] = field(default_factory=list)
    fresh_head: list[str] = field(default_factory=list)  # head variables kept at their init
    missing: list[str] = field(default_factory=list)  # left at init (partial loads only)
    ignored: list[str] = field(default_factory=list)  # head entries for a model without head
    from_cache: bool = False

    @property
    def complete(self) -> bool:
        return not (self.fresh_head or self.missing or self.ignored)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or "." in value or value.startswith("~")


def resolve(weights: str | os.PathLike | None, family: str, **match: Any) -> WeightsSource | None:
    """Resolve `weights=` to a local source.

    - `None` -> `None` (random init);
    - a registry name (`"k400"`, `"imagenet21k"`, ...) for `family`, narrowed by builder
      arguments in `match` (e.g. `variant=`, `size=`, `backbone=`) -> downloaded into the Keras
      cache (sha256-verified when known) and returned;
    - an existing path to a `.weights.h5`/`.keras` file or to an original checkpoint file or
      folder -> returned as is, its format sniffed from the content.

    Registry names never contain `.` or `/`, so `"./k400"` always means a file.
    """
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights= must be None, a registry name or a path; got {weights!r}.")
    value = os.fspath(weights)
    if not _looks_like_path(value) and registry.is_registry_name(value, family):
        entry = registry.find_entry(value, family, **match)
        path = download.fetch_entry(entry)
        try:
            return WeightsSource(path, sniff_format(path), entry)
        except CheckpointError as err:
            raise _dropped_download(entry, err) from None
    path = os.path.expanduser(value)
    if os.path.exists(path):
        return WeightsSource(path, sniff_format(path))
    if _looks_like_path(value):
        raise UnknownWeightsError(f"weights={value!r}: no such file or folder.")
    registry.find_entry(value, family, **match)  # raises the informative error
    raise AssertionError("unreachable")


def _dropped_download(entry: dict, err: CheckpointError) -> CheckpointError:
    """Forget an unreadable cached download and explain it (see `load_weights`)."""
    # A download that cannot be read (e.g. cut short by a server that sent no Content-Length)
    # must not poison later runs: remove it so the next run downloads it afresh.
    download.forget_download(entry)
    return type(err)(
        f"{err}\nThe cached download of {entry['id']!r} was removed; run again to download "
        "it afresh."
    )


def model_signature(model) -> str:
    """Hash of the model's variable paths and shapes (keys the converted-weights cache)."""
    layout = [[v.path, [int(d) for d in v.shape]] for v in model.weights]
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()


def _summary(paths: list[str], limit: int = 12) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f", ... ({len(paths) - limit} more)" if len(paths) > limit else "")


def assign_weights(
    model,
    mapping: dict[str, np.ndarray],
    allow_missing: bool = False,
    progress: Callable[[int], None] | None = None,
) -> AssignReport:
    """Assign `{variable.path: array}` to `model`, checking structure first.

    Every model variable must receive an array of exactly its shape (unless `allow_missing`,
    for partial initialisations such as an image checkpoint); paths the model does not have are
    errors. The classifier (`head/...`) is special: if its shapes differ (a different
    `num_classes`), the rest loads and the head keeps its fresh initialisation, with a warning;
    if the model has no head (`include_top=False`), head entries are ignored. Nothing is
    assigned unless all checks pass.

    Example:

    >>> import keras, numpy as np
    >>> inputs = keras.Input((3,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="head")(inputs))
    >>> report = assign_weights(model, {"head/kernel": np.ones((3, 2)), "head/bias": np.zeros(2)})
    >>> report.assigned
    ['head/kernel', 'head/bias']
    """
    variables = {}
    for variable in model.weights:
        if variable.path in variables:
            raise ValueError(
                f"model {model.name!r} has two variables with path {variable.path!r}; give its "
                "layers unique names so weights can be mapped unambiguously."
            )
        variables[variable.path] = variable
    report = AssignReport()
    has_head = any(p.startswith(HEAD_PREFIX) for p in variables)

    unknown = [p for p in mapping if p not in variables]
    if not has_head:
        report.ignored = [p for p in unknown if p.startswith(HEAD_PREFIX)]
        unknown = [p for p in unknown if not p.startswith(HEAD_PREFIX)]
    if unknown:
        raise ValueError(
            f"the converted weights name {len(unknown)} variable(s) that model {model.name!r} "
            f"does not have: {_summary(unknown)}. The checkpoint and the model architecture "
            "differ (check the builder arguments against the checkpoint)."
        )
    mismatched = [
        (p, tuple(np.shape(mapping[p])), tuple(int(d) for d in variables[p].shape))
        for p in mapping
        if p in variables and tuple(np.shape(mapping[p])) != tuple(variables[p].shape)
    ]
    head_mismatch = [m for m in mismatched if m[0].startswith(HEAD_PREFIX)]
    body_mismatch = [m for m in mismatched if not m[0].startswith(HEAD_PREFIX)]
    if body_mismatch:
        details = "; ".join(f"{p}: checkpoint {a} vs model {b}" for p, a, b in body_mismatch[:8])
        raise ValueError(
            f"{len(body_mismatch)} weight shape(s) differ between the checkpoint and model "
            f"{model.name!r}: {details}. Build the model with the checkpoint's architecture."
        )
    skip = set()
    if head_mismatch:
        skip = {p for p in mapping if p.startswith(HEAD_PREFIX)}
        report.fresh_head = sorted(p for p in variables if p.startswith(HEAD_PREFIX))
        shapes = ", ".join(f"{p} {a} -> {b}" for p, a, b in head_mismatch)
        warnings.warn(
            f"keras_vtn: the checkpoint's classifier does not fit model {model.name!r} "
            f"({shapes}; num_classes differs). Loaded everything else; the head keeps its fresh "
            "initialisation and must be trained.",
            UserWarning,
            stacklevel=2,
        )
    missing = [
        p for p in variables if p not in mapping and p not in report.fresh_head
    ]
    if missing and not allow_missing:
        raise ValueError(
            f"the checkpoint provides no value for {len(missing)} variable(s) of model "
            f"{model.name!r}: {_summary(missing)}. The checkpoint does not match this "
            "architecture (or the converter misses a mapping)."
        )
    report.missing = missing
    import keras  # deferred so that `import keras_vtn.weights` stays light

    for count, (path, array) in enumerate(mapping.items(), 1):
        if path in skip or path in report.ignored:
            continue
        variable = variables[path]
        variable.assign(keras.ops.cast(np.asarray(array), variable.dtype))
        report.assigned.append(path)
        if progress is not None:
            progress(count)
    return report


def _load_keras_file(model, source: WeightsSource) -> AssignReport:
    """Load a `.weights.h5`/`.keras`; retry without the head when only the head mismatches."""
    report = AssignReport()
    with tempfile.TemporaryDirectory() as tmp:
        path = source.path
        if source.format == "keras_archive":
            from keras_vtn.weights import safe_zip

            with safe_zip.open_zip(path) as archive:
                data = safe_zip.read_member(archive, "model.weights.h5", path)
            path = os.path.join(tmp, "model.weights.h5")
            with open(path, "wb") as handle:
                handle.write(data)
        elif not path.endswith(".weights.h5"):
            # Keras picks the reader from the suffix; give it the one it expects.
            link = os.path.join(tmp, "model.weights.h5")
            os.symlink(os.path.abspath(path), link)
            path = link
        try:
            model.load_weights(path)
        except ValueError as first_error:
            head = _head_layer(model)
            if head is None:
                raise ValueError(
                    f"{source.path!r} does not fit model {model.name!r}: {first_error}"
                ) from None
            try:
                model.load_weights(path, objects_to_skip=[head])
            except ValueError:
                raise ValueError(
                    f"{source.path!r} does not fit model {model.name!r}: {first_error}"
                ) from None
            report.fresh_head = [v.path for v in head.weights]
            warnings.warn(
                f"keras_vtn: the classifier in {source.path!r} does not fit model "
                f"{model.name!r} (num_classes differs). Loaded everything else; the head keeps "
                "its fresh initialisation and must be trained.",
                UserWarning,
                stacklevel=3,
            )
    report.assigned = [v.path for v in model.weights if v.path not in report.fresh_head]
    return report


def _head_layer(model):
    try:
        return model.get_layer("head")
    except ValueError:
        return None


def _converted_cache_path(family: str, source_hash: str, model) -> str:
    name = f"{family}-{source_hash[:16]}-{model_signature(model)[:16]}.weights.h5"
    return os.path.join(download.cache_root(), "converted", name)


def _load_converted_cache(model, cache_path: str) -> bool:
    """Load a converted-weights cache file; on failure drop it (with a warning) and say False.

    The cache is only ever derived from the original checkpoint, so a file that cannot be
    opened or read (cut short by a full disk, a killed copy, bit rot) is rebuilt rather than
    failing every later run with a raw h5py error.
    """
    try:
        model.load_weights(cache_path)
        return True
    except Exception as err:  # noqa: BLE001 - any unreadable cache file is rebuilt
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        warnings.warn(
            f"keras_vtn: the converted-weights cache file {cache_path} is unreadable "
            f"({reason}); it was deleted and is being rebuilt from the original checkpoint.",
            UserWarning,
            stacklevel=3,
        )
    try:
        os.remove(cache_path)
    except FileNotFoundError:
        pass  # another process already removed it
    return False


def save_weights_atomically(model, target: str) -> None:
    """`model.save_weights` to a temp name then `os.replace`: never a partial file at `target`."""
    with atomic_path(target, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)


def load_weights(
    model,
    weights: str | os.PathLike | None,
    family: str,
    converter: Callable[[dict, Any], dict] | None = None,
    **match: Any,
) -> AssignReport | None:
    """Load `weights=` (see `resolve`) into the built `model` of `family`.

    `converter(state, model) -> {variable.path: array}` maps an original checkpoint (Keras
    files need none). Registry downloads are converted once and cached as `.weights.h5` keyed
    by the source's hash and the model's variable layout.
    """
    return load_source(model, resolve(weights, family, **match), family, converter)


def load_source(
    model,
    source: WeightsSource | None,
    family: str,
    converter: Callable[[dict, Any], dict] | None = None,
    state: dict | None = None,
) -> AssignReport | None:
    """Load an already resolved `source` into `model` (`state`: its tensors, if read already).

    Every variable but the head must be covered unless the source is partial (an image
    checkpoint); see `assign_weights`.
    """
    if source is None:
        return None
    if source.is_keras:
        return _load_keras_file(model, source)
    cache_path = None
    if source.entry is not None:
        cache_path = _converted_cache_path(
            family, download.source_sha256(source.entry, source.path), model
        )
        if os.path.exists(cache_path):
            if _load_converted_cache(model, cache_path):
                return AssignReport(assigned=[v.path for v in model.weights], from_cache=True)
    if converter is None:
        raise FamilyNotAvailableError(
            f"the {family} converter is not available: an original checkpoint needs the "
            f"family's converter (pass converter=, or register the {family} family)."
        )
    if state is None:
        try:
            state = read_checkpoint(source.path)
        except CheckpointError as err:
            if source.entry is None:
                raise
            raise _dropped_download(source.entry, err) from None
    report = assign_weights(model, converter(state, model), allow_missing=source.partial)
    if cache_path is not None and report.complete:
        save_weights_atomically(model, cache_path)
    return report
