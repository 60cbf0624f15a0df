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

Reading a hostile file is safe: no code from it runs and nothing it does outlives the read;
only regular files are opened (never a FIFO or device); nesting is bounded in every format
(an HF index's shards are read as files only); shapes are checked before anything is sized
from them; and the memory a read materialises is bounded by the bytes the file stores. Every
failure is a `CheckpointError` naming the file.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np

from keras_vtn.weights import safe_zip
from keras_vtn.weights.errors import (
    CheckpointError,
    CheckpointLimitError,
    CheckpointNotFoundError,
    UnsafeCheckpointError,
)
from keras_vtn.weights.flax_reader import is_msgpack_map, read_flax_msgpack
from keras_vtn.weights.safe_zip import describe
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


def _sniff_folder(path: str) -> str:
    try:
        entries = set(os.listdir(path))
    except OSError as err:
        raise CheckpointError(f"folder {path!r} cannot be listed ({err.strerror}).") from None
    if "config.json" in entries and entries.intersection(HF_WEIGHT_FILES):
        return "hf_folder"
    if _flax_checkpoint_in(path):
        return "flax_folder"
    raise CheckpointError(
        f"folder {path!r} is not a checkpoint folder: expected config.json with "
        f"model.safetensors or pytorch_model.bin (Hugging Face) or a Flax `checkpoint` file; "
        f"found {sorted(entries)[:10]}."
    )


def _sniff_file(path: str, what: str = "checkpoint") -> str:
    """The format of a regular file; a directory, device, FIFO or link loop is an error."""
    with safe_zip.open_regular(path, what) as handle:
        size = safe_zip.file_size(handle)
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
            f"file (members: {[describe(n) for n in names[:5]]}). Supported: {SUPPORTED}."
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


def _sniff(path: str) -> str:
    if os.path.isdir(path):
        return _sniff_folder(path)
    return _sniff_file(path)


def _as_checkpoint_error(path: str, err: Exception) -> CheckpointError:
    """The last line of defence: whatever escaped a reader becomes a CheckpointError naming
    the file. The readers raise their own clear errors first; reaching here is a gap."""
    if isinstance(err, CheckpointError):
        if path in str(err):
            return err
        if isinstance(err, CheckpointNotFoundError):
            return CheckpointNotFoundError(f"{path!r}: {err}", err.filename)
        return type(err)(f"{path!r}: {err}")
    if isinstance(err, FileNotFoundError):
        return CheckpointNotFoundError(f"{path!r}: a file is missing ({err}).", err.filename)
    if isinstance(err, RecursionError):
        return CheckpointLimitError(f"{path!r} nests too deeply to be read; refusing it.")
    if isinstance(err, MemoryError):
        return CheckpointLimitError(f"{path!r} asks for more memory than is available.")
    text = describe(str(err), 200)
    return CheckpointError(
        f"{path!r} could not be read ({type(err).__name__}: {text}); the file is corrupt or "
        "not a supported checkpoint."
    )


def sniff_format(path: str | os.PathLike) -> str:
    """Name the checkpoint format of `path` from its content (see the module table)."""
    path = os.path.expanduser(os.fsdecode(os.fspath(path)))
    try:
        return _sniff(path)
    except Exception as err:  # noqa: BLE001 - turned into a CheckpointError naming the file
        raise _as_checkpoint_error(path, err) from None


def _npy_array(data: bytes, path: str, member: str, budget: safe_zip.Budget) -> np.ndarray:
    """One `.npy` member, its header validated before anything is sized from it."""
    stream = io.BytesIO(data)
    where = f"member {describe(member)}"
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise CheckpointError(f"{path!r}: {where} has unsupported .npy version {version}.")
    except CheckpointError:
        raise
    except (ValueError, TypeError, SyntaxError, RecursionError, EOFError, OSError) as err:
        raise CheckpointError(
            f"{path!r}: {where} is not a plain numpy array ({describe(str(err), 200)})."
        ) from None
    if dtype.hasobject:
        raise CheckpointError(
            f"{path!r}: {where} is not a plain numpy array (it holds Python objects); object "
            "arrays are refused because loading them runs pickle."
        )
    if dtype.kind not in "biufcSU" or dtype.itemsize == 0:
        raise CheckpointError(f"{path!r}: {where} has unsupported dtype {dtype}.")
    shape = safe_zip.check_shape(shape, path, where)
    nbytes = safe_zip.element_count(shape) * dtype.itemsize
    if len(data) - stream.tell() != nbytes:
        raise CheckpointError(
            f"{path!r}: {where} declares shape {shape} ({nbytes} bytes) but holds "
            f"{len(data) - stream.tell()}; the file is corrupt."
        )
    budget.charge_array(nbytes, where)
    array = np.frombuffer(data, dtype=dtype, count=safe_zip.element_count(shape),
                          offset=stream.tell())
    return array.reshape(shape, order="F" if fortran else "C").copy(order="K")


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a `.npz` through the defensive zip reader; object arrays (pickles) are refused."""
    path = os.fspath(path)
    out: dict[str, np.ndarray] = {}
    with safe_zip.open_zip(path) as archive:
        budget = safe_zip.Budget(path, safe_zip.stored_bytes(archive))
        for name in archive.namelist():
            if not name.endswith(".npy"):
                raise CheckpointError(f"{path!r}: member {describe(name)} is not a .npy array.")
            data = safe_zip.read_member(archive, name, path)
            out[name[: -len(".npy")]] = _npy_array(data, path, name, budget)
    return out


def _read_file(path: str, what: str, allowed: tuple[str, ...] | None = None):
    """Read one checkpoint file (never a folder), optionally only of the `allowed` formats."""
    fmt = _sniff_file(path, what)
    if allowed is not None and fmt not in allowed:
        raise CheckpointError(
            f"{what} {path!r} is a {fmt} file; expected one of {', '.join(allowed)}."
        )
    if fmt == "torch_zip":
        return read_torch_zip(path)
    if fmt == "torch_legacy":
        return read_torch_legacy(path)
    if fmt == "flax_msgpack":
        return read_flax_msgpack(path)
    if fmt == "safetensors":
        return read_safetensors(path)
    if fmt == "npz":
        return read_npz(path)
    raise CheckpointError(
        f"{path!r} is a Keras weights file ({fmt}), not an original checkpoint: load it with "
        "model.load_weights(path) or pass it as weights= to a keras_vtn builder."
    )


_SHARD_FORMATS = ("safetensors", "torch_zip", "torch_legacy")


def _read_hf_folder(path: str) -> dict[str, np.ndarray]:
    # Shards are read as files only, never as folders or indexes: a weight_map that names the
    # index itself, "." or a folder is refused, so no index can lead back into a folder
    # (nesting depth 1) and a loop is a clear error instead of a RecursionError.
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = os.path.join(path, index_name)
        if not os.path.lexists(index_path):
            continue
        index = safe_zip.read_json_file(index_path, "shard index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()
        ):
            raise CheckpointError(
                f"{index_path!r} is not a shard index (no weight_map of tensor -> file names)."
            )
        out: dict[str, np.ndarray] = {}
        seen_files: dict[tuple[int, int], str] = {}
        for shard in sorted(set(weight_map.values())):
            if (
                os.path.basename(shard) != shard
                or shard in ("", ".", "..")
                or shard in HF_WEIGHT_FILES[1::2]
                or shard.endswith(".json")
            ):
                raise CheckpointError(
                    f"{index_path!r}: bad shard name {describe(shard)} (shards are weight files "
                    "in the same folder, not folders or indexes)."
                )
            shard_path = os.path.join(path, shard)
            if not os.path.lexists(shard_path):
                raise CheckpointNotFoundError(
                    f"{path!r}: shard {describe(shard)} ({index_name}) is missing.", shard_path
                )
            fmt = _sniff_file(shard_path, "shard")
            if fmt not in _SHARD_FORMATS:
                raise CheckpointError(f"shard {shard_path!r} is a {fmt} file, not a weights shard.")
            info = os.stat(shard_path)
            identity = (info.st_dev, info.st_ino)
            if identity in seen_files:
                raise UnsafeCheckpointError(
                    f"{path!r}: shards {describe(seen_files[identity])} and {describe(shard)} are "
                    "the same file (a link); refusing to read one file's data twice."
                )
            seen_files[identity] = shard
            for name, array in _read_file(shard_path, "shard", _SHARD_FORMATS).items():
                if name in out:
                    raise CheckpointError(
                        f"{path!r}: tensor {describe(name)} is stored in two shards."
                    )
                out[name] = array
        return out
    for name in ("model.safetensors", "pytorch_model.bin"):
        candidate = os.path.join(path, name)
        if os.path.lexists(candidate):
            return _read_file(candidate, "weights file", _SHARD_FORMATS)
    raise CheckpointError(f"{path!r}: no model.safetensors or pytorch_model.bin found.")


def read_hf_config(path: str | os.PathLike) -> dict:
    """The `config.json` of a Hugging Face folder (architecture hints for converters)."""
    config_path = os.path.join(os.fspath(path), "config.json")
    config = safe_zip.read_json_file(config_path, "config file")
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path!r} does not hold a JSON object.")
    return config


def _read(path: str) -> dict[str, np.ndarray]:
    if os.path.isdir(path):
        fmt = _sniff_folder(path)
        if fmt == "hf_folder":
            return _read_hf_folder(path)
        return _read_file(_flax_checkpoint_in(path), "Flax checkpoint", ("flax_msgpack",))
    return _read_file(path, "checkpoint")


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an original checkpoint into a flat `{name: numpy.ndarray}` dict.

    Never imports torch, jax, flax or safetensors and never executes code from the file:
    PyTorch pickles go through an unpickler that admits only tensor-rebuilding names.
    Nothing a file does outlives its read, only regular files are opened, nesting is bounded
    and the memory a read materialises is bounded by the bytes the file stores.

    Args:
        path: a checkpoint file or folder (see the module docstring for formats).

    Returns:
        Flat dict from original tensor names to arrays.

    Raises:
        CheckpointError: every failure to read, naming the file and the problem, e.g.
            truncated, corrupt, unknown format, not a regular file.
        CheckpointNotFoundError: (a CheckpointError and a FileNotFoundError) the path, or a
            file a folder's index names, does not exist.
        UnsafeCheckpointError: the file asks for code execution, path traversal or a zip bomb.
        CheckpointLimitError: (an UnsafeCheckpointError) the file nests too deeply or would
            materialise more memory than it stores.

    Example:

    >>> import numpy as np, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> np.savez(os.path.join(folder, "vit.npz"), **{"embedding/bias": np.zeros(3)})
    >>> read_checkpoint(os.path.join(folder, "vit.npz"))["embedding/bias"].shape
    (3,)
    """
    path = os.path.expanduser(os.fsdecode(os.fspath(path)))
    try:
        return _read(path)
    except Exception as err:  # noqa: BLE001 - turned into a CheckpointError naming the file
        raise _as_checkpoint_error(path, err) from None
