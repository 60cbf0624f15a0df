"""`read_checkpoint(path)`: any supported original checkpoint -> `{name: numpy array}`.

The format is sniffed from the content, never from the file name. Supported:

| format | produced by | names |
|---|---|---|
| `torch_zip` | `torch.save` (torch >= 1.6) | `.`-joined, e.g. `module.blocks.0.attn.qkv.weight` |
| `torch_legacy` | `torch.save(..., _use_new_zipfile_serialization=False)` | as above |
| `flax_msgpack` | `flax.training.checkpoints` (scenic) | `/`-joined: `optimizer/target/cls` |
| `safetensors` | `safetensors` / HF `save_pretrained` | as stored |
| `hf_folder` | HF `save_pretrained` folder (`config.json` + weights) | as stored |
| `npz` | `numpy.savez` (Google's ViT image checkpoints) | as stored (`/`-joined) |

Nested containers are flattened; non-array leaves (epoch counters, config strings) are dropped.
Prefixes such as `module.` or `model_state.` are kept: family converters decide what to strip.
bfloat16 tensors are returned as float32 (exact); other dtypes are kept.
"""

from __future__ import annotations

import io
import json
import os
import re

import numpy as np

from keras_vtn.weights import safe_zip
from keras_vtn.weights.errors import CheckpointError
from keras_vtn.weights.flax_reader import is_msgpack_map, read_flax_msgpack
from keras_vtn.weights.safetensors_reader import looks_like_safetensors, read_safetensors
from keras_vtn.weights.torch_reader import is_legacy_torch, read_torch_legacy, read_torch_zip

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
SUPPORTED = (
    "PyTorch .pth/.pyth/.bin (zip or legacy torch.save), Flax msgpack `checkpoint` files, "
    ".safetensors, Hugging Face folders (config.json + model.safetensors or pytorch_model.bin), "
    ".npz, and Keras .weights.h5/.keras"
)
_FLAX_FILE = re.compile(r"^checkpoint(_\d+)?$")


def _flax_checkpoint_in(folder: str) -> str | None:
    """Latest `checkpoint` / `checkpoint_<step>` file in a folder (flax naming), if any."""
    names = [n for n in os.listdir(folder) if _FLAX_FILE.match(n)]
    if not names:
        return None
    step = lambda n: int(n.split("_")[1]) if "_" in n else -1  # noqa: E731
    return os.path.join(folder, max(names, key=step))


def sniff_format(path: str | os.PathLike) -> str:
    """Name the checkpoint format of `path` from its content (see the module table)."""
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        entries = set(os.listdir(path))
        if "config.json" in entries and entries.intersection(HF_WEIGHT_FILES):
            return "hf_folder"
        if _flax_checkpoint_in(path):
            return "flax_folder"
        raise CheckpointError(
            f"folder {path!r} is not a checkpoint folder: expected config.json with "
            f"model.safetensors or pytorch_model.bin (Hugging Face) or a Flax `checkpoint` file; "
            f"found {sorted(entries)[:10]}."
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist.")
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(16)
    if not head:
        raise CheckpointError(f"{path!r} is empty (0 bytes): the download or copy failed.")
    if head.startswith(HDF5_MAGIC):
        return "keras_weights"
    if safe_zip.is_zip(head):
        with safe_zip.open_zip(path) as archive:
            names = archive.namelist()
        if any(n.count("/") == 1 and n.endswith("/data.pkl") for n in names):
            return "torch_zip"
        if "config.json" in names and "model.weights.h5" in names:
            return "keras_archive"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if any(n.endswith("/constants.pkl") for n in names):
            return "torch_zip"  # TorchScript; the torch reader explains
        raise CheckpointError(
            f"{path!r} is a zip archive but neither a torch checkpoint, a .npz nor a .keras "
            f"file (members: {names[:5]}). Supported: {SUPPORTED}."
        )
    if is_legacy_torch(head):
        return "torch_legacy"
    if head[0] == 0x80 and len(head) > 1 and head[1] in (2, 3, 4, 5):
        raise CheckpointError(
            f"{path!r} is a plain Python pickle, not a torch.save checkpoint. It was not "
            f"unpickled (that could run code). Supported: {SUPPORTED}."
        )
    if is_msgpack_map(head):
        return "flax_msgpack"
    if looks_like_safetensors(head, size):
        return "safetensors"
    raise CheckpointError(
        f"{path!r} is in an unknown format (starts with bytes {head[:8].hex()}). "
        f"Supported: {SUPPORTED}."
    )


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a `.npz` through the defensive zip reader; object arrays (pickles) are refused."""
    path = os.fspath(path)
    out: dict[str, np.ndarray] = {}
    with safe_zip.open_zip(path) as archive:
        for name in archive.namelist():
            data = safe_zip.read_member(archive, name, path)
            try:
                array = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
            except ValueError as err:
                raise CheckpointError(
                    f"{path!r}: member {name!r} is not a plain numpy array ({err}); object "
                    "arrays are refused because loading them runs pickle."
                ) from None
            except (OSError, EOFError) as err:
                raise CheckpointError(f"{path!r}: member {name!r} is corrupt ({err}).") from None
            out[name[: -len(".npy")]] = array
    return out


def _read_hf_folder(path: str) -> dict[str, np.ndarray]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = os.path.join(path, index_name)
        if os.path.exists(index_path):
            try:
                with open(index_path, encoding="utf-8") as handle:
                    weight_map = json.load(handle)["weight_map"]
                shards = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                raise CheckpointError(f"{index_path!r} is not a shard index ({err}).") from None
            out: dict[str, np.ndarray] = {}
            for shard in shards:
                if os.path.basename(shard) != shard:
                    raise CheckpointError(f"{index_path!r}: bad shard name {shard!r}.")
                shard_path = os.path.join(path, shard)
                if not os.path.exists(shard_path):
                    raise CheckpointError(f"{path!r}: shard {shard!r} ({index_name}) is missing.")
                out.update(read_checkpoint(shard_path))
            return out
    for name in ("model.safetensors", "pytorch_model.bin"):
        candidate = os.path.join(path, name)
        if os.path.exists(candidate):
            return read_checkpoint(candidate)
    raise CheckpointError(f"{path!r}: no model.safetensors or pytorch_model.bin found.")


def read_hf_config(path: str | os.PathLike) -> dict:
    """The `config.json` of a Hugging Face folder (architecture hints for converters)."""
    with open(os.path.join(os.fspath(path), "config.json"), encoding="utf-8") as handle:
        return json.load(handle)


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an original checkpoint into a flat `{name: numpy.ndarray}` dict.

    Never imports torch, jax, flax or safetensors and never executes code from the file:
    PyTorch pickles go through an unpickler that admits only tensor-rebuilding names.

    Args:
        path: a checkpoint file or folder (see the module docstring for formats).

    Returns:
        Flat dict from original tensor names to arrays.

    Raises:
        CheckpointError: truncated, corrupt or unknown format.
        UnsafeCheckpointError: the file asks for code execution, path traversal or a zip bomb.

    Example:

    >>> import numpy as np, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> np.savez(os.path.join(folder, "vit.npz"), **{"embedding/bias": np.zeros(3)})
    >>> read_checkpoint(os.path.join(folder, "vit.npz"))["embedding/bias"].shape
    (3,)
    """
    path = os.path.expanduser(os.fspath(path))
    fmt = sniff_format(path)
    if fmt == "torch_zip":
        return read_torch_zip(path)
    if fmt == "torch_legacy":
        return read_torch_legacy(path)
    if fmt == "flax_msgpack":
        return read_flax_msgpack(path)
    if fmt == "flax_folder":
        return read_flax_msgpack(_flax_checkpoint_in(path))
    if fmt == "safetensors":
        return read_safetensors(path)
    if fmt == "hf_folder":
        return _read_hf_folder(path)
    if fmt == "npz":
        return read_npz(path)
    raise CheckpointError(
        f"{path!r} is a Keras weights file ({fmt}), not an original checkpoint: load it with "
        "model.load_weights(path) or pass it as weights= to a keras_vtn builder."
    )
