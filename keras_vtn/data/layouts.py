"""Find the videos of a dataset and their labels: Kinetics CSVs, class folders, list files.

Every reader returns a `Records` object: parallel lists of paths and integer labels (`-1` when
a split has no labels), the class names in index order, and the entries whose video file was
not found. Class indices come from the sorted class names unless names are given; given names
(a model's classes) are matched by name, a subset of them is fine, and a class that is not
among them is an error naming it.

>>> import os, tempfile
>>> root = tempfile.mkdtemp()
>>> for name in ["b/x.mp4", "a/y.mp4", "a/z.webm"]:
...     os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
...     open(os.path.join(root, name), "wb").close()
>>> records = class_folders(root)
>>> records.label_names, [os.path.relpath(p, root) for p in records.paths], records.labels
(['a', 'b'], ['a/y.mp4', 'a/z.webm', 'b/x.mp4'], [0, 0, 1])
>>> len(KINETICS400_LABELS), KINETICS400_LABELS[0], KINETICS400_LABELS[-1]
(400, 'abseiling', 'zumba')
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Iterable, Sequence

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")
YOUTUBE_ID_LENGTH = 11


def _read_labels(name: str) -> tuple[str, ...]:
    path = os.path.join(os.path.dirname(__file__), name)
    with open(path, encoding="utf-8") as f:
        return tuple(line.strip() for line in f if line.strip())


# The 400 Kinetics-400 class names sorted (Python string order), i.e. in class-index order.
KINETICS400_LABELS: tuple[str, ...] = _read_labels("kinetics400_labels.txt")


class UnknownClassError(ValueError):
    """Data name a class that is not among the given label names (a model's classes).

    `unknown` holds the data's class names that were not found, `label_names` the names given.
    """

    def __init__(self, message: str, unknown: Sequence[str], label_names: Sequence[str]):
        super().__init__(message)
        self.unknown, self.label_names = list(unknown), list(label_names)


@dataclasses.dataclass
class Records:
    """Videos of one split: `paths[i]` has class `labels[i]` (-1 = unlabelled)."""

    paths: list[str]
    labels: list[int]
    label_names: list[str]
    missing: list[str] = dataclasses.field(default_factory=list)
    # paths a folder scan left out, with why: a second path to a file or folder already
    # listed (symlink, hard link) or a symlink loop
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def label_map(self) -> dict[str, int]:
        """Class name -> index."""
        return {name: i for i, name in enumerate(self.label_names)}

    @property
    def present_fraction(self) -> float:
        """Share of the listed videos that exist on disk."""
        total = len(self.paths) + len(self.missing)
        return len(self.paths) / total if total else 0.0


def label_map(names: Iterable[str]) -> dict[str, int]:
    """Class name -> index for sorted unique names."""
    return {name: i for i, name in enumerate(sorted(set(names)))}


def _normalise(name: str) -> str:
    # Downloaders keep spaces; mmaction's rename script turns them into underscores and
    # some copies drop quotes/parentheses. Match labels and folder names on a common key.
    return "".join(ch for ch in name.lower().replace("_", " ") if ch.isalnum() or ch == " ").strip()


def _scan(root: str, extensions: Sequence[str], skipped: dict[str, str] | None = None) -> list[str]:
    """Video files under `root`, each real file once, in sorted depth-first order.

    Symlinked folders are followed, except a symlink loop (a link back to a folder above it,
    such as `ln -s . loop`). A file reached by several paths (symlinks, hard links) is listed
    once, at its real location when a scanned path leads there without a symlink, else at
    its first path. A folder whose name has a video extension is listed as a video, so that
    the decoder reports it, rather than walked. What is left out lands in `skipped`
    (path -> why).
    """
    skipped = {} if skipped is None else skipped
    found = _walk(root, extensions, skipped)
    return [path for path, _ in _dedupe([(p, None) for p in found], root, skipped)]


def _walk(root: str, extensions: Sequence[str], skipped: dict[str, str]) -> list[str]:
    extensions = tuple(e.lower() for e in extensions)
    found: list[str] = []
    # (folder, real paths of the folders above it on this walk): a folder already on the
    # chain, or above one on it, is a loop
    stack: list[tuple[str, tuple[str, ...]]] = [(root, ())]
    while stack:
        directory, chain = stack.pop()
        real = os.path.realpath(directory)
        above = next((c for c in chain if c == real or c.startswith(real.rstrip(os.sep) + os.sep)),
                     None)
        if above is not None:
            skipped[directory] = f"symlink loop: leads back to {real}"
            continue
        chain = (*chain, real)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as error:
            skipped[directory] = f"folder not readable: {error.strerror or error}"
            continue
        subdirs = []
        for entry in entries:
            # Hidden files are partial writes or macOS "._name.mp4" metadata, not videos.
            if entry.name.startswith("."):
                continue
            is_video = entry.name.lower().endswith(extensions)
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir and not is_video:
                subdirs.append(entry.path)
            elif is_video:
                found.append(entry.path)
        stack.extend((d, chain) for d in reversed(subdirs))
    return found


def _dedupe(entries: list[tuple[str, object]], root: str, skipped: dict[str, str]):
    """`(path, label)` entries with each real file once (see `_scan` for which path stays)."""
    real_root = os.path.realpath(root)
    by_file: dict[tuple[int, int], int] = {}
    keep: list[tuple[str, object] | None] = []
    for path, label in entries:
        try:
            st = os.stat(path)
        except OSError:  # dangling symlink, permissions: listed, and the decoder says why
            keep.append((path, label))
            continue
        key = (st.st_dev, st.st_ino)
        if key not in by_file:
            by_file[key] = len(keep)
            keep.append((path, label))
            continue
        first = by_file[key]
        listed = keep[first][0]
        if _direct(path, root, real_root) and not _direct(listed, root, real_root):
            skipped[listed] = f"same file as {path}, listed there (its real location)"
            keep[first] = None
            by_file[key] = len(keep)
            keep.append((path, label))
        else:
            skipped[path] = f"same file as {listed}, listed there"
    return [entry for entry in keep if entry is not None]


def _direct(path: str, root: str, real_root: str) -> bool:
    """True if no symlink lies between `root` and `path`."""
    return os.path.realpath(path) == os.path.join(real_root, os.path.relpath(path, root))


def class_folders(
    root: str,
    label_names: Sequence[str] | None = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
) -> Records:
    """`root/<class>/<video>` trees; classes are the sorted sub-folder names.

    With `label_names`, folders map onto those names (spaces/underscores ignored) and a folder
    that matches none of them is an error.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Video folder {root!r} does not exist.")
    skipped: dict[str, str] = {}
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    real_root = os.path.realpath(root)
    for name in list(folders):
        real = os.path.realpath(os.path.join(root, name))
        # `ln -s . loop` (or a link further up) as a class folder would list root again
        if real_root == real or real_root.startswith(real.rstrip(os.sep) + os.sep):
            skipped[os.path.join(root, name)] = f"symlink loop: leads back to {real}"
            folders.remove(name)
    if not folders:
        raise ValueError(f"{root!r} has no class sub-folders; expected root/<class>/<video>.")
    names = list(label_names) if label_names is not None else folders
    lookup = {_normalise(n): i for i, n in enumerate(names)}
    entries = []
    for folder in folders:
        key = _normalise(folder)
        if key not in lookup:
            raise UnknownClassError(
                f"Folder {folder!r} in {root!r} is not a known class: it is not one of the "
                f"{len(names)} label names ({_preview(names)}). Pass label_names=None to use "
                "the folder names as classes.", [folder], names,
            )
        for path in _walk(os.path.join(root, folder), extensions, skipped):
            entries.append((path, lookup[key]))
    entries = _dedupe(entries, root, skipped)
    paths, labels = [p for p, _ in entries], [label for _, label in entries]
    return Records(paths, labels, names, skipped=skipped)


def list_file(
    path: str,
    root: str | None = None,
    label_names: Sequence[str] | None = None,
) -> Records:
    """"path label" lines (mmaction / PyTorchVideo); the label after the last whitespace.

    The label may be an integer index or a class name (names are indexed in sorted order or by
    `label_names`); lines without a label are unlabelled (-1). Relative paths are joined to
    `root` (default: the list file's folder). Lines starting with `#` are comments.
    """
    root = root if root is not None else os.path.dirname(os.path.abspath(path))
    entries: list[tuple[str, str | None]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(None, 1)
            if len(parts) == 2 and not parts[1].lower().endswith(VIDEO_EXTENSIONS):
                entries.append((parts[0], parts[1]))
            else:
                entries.append((line, None))
    raw = [label for _, label in entries if label is not None]
    numeric = all(label.lstrip("-").isdigit() for label in raw)
    if numeric:
        names = list(label_names) if label_names is not None else [
            str(i) for i in range(max((int(x) for x in raw), default=-1) + 1)
        ]
        lookup = None
    else:
        names = list(label_names) if label_names is not None else sorted(set(raw))
        lookup = {_normalise(n): i for i, n in enumerate(names)}
    paths, labels, missing = [], [], []
    for rel, label in entries:
        full = rel if os.path.isabs(rel) else os.path.join(root, rel)
        if label is None:
            index = -1
        elif lookup is None:
            index = int(label)
        else:
            key = _normalise(label)
            if key not in lookup:
                raise UnknownClassError(
                    f"Label {label!r} in {path!r} is not a known class: it is not one of the "
                    f"{len(names)} label names ({_preview(names)}).", [label], names)
            index = lookup[key]
        if os.path.exists(full):
            paths.append(full)
            labels.append(index)
        else:
            missing.append(full)
    return Records(paths, labels, names, missing)


def read_kinetics_csv(path: str) -> list[dict[str, str]]:
    """Rows of an official Kinetics CSV (`label,youtube_id,time_start,time_end,split[,is_cc]`).

    Quoted labels are handled; the test split may have no `label` column.
    """
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "youtube_id" not in rows[0]:
        raise ValueError(
            f"{path!r} is not a Kinetics CSV: expected a header with youtube_id "
            "(label,youtube_id,time_start,time_end,split)."
        )
    return rows


def is_kinetics_csv(path: str) -> bool:
    """True if the file's header names a `youtube_id` column."""
    try:
        with open(path, encoding="utf-8") as f:
            return "youtube_id" in f.readline()
    except (OSError, UnicodeDecodeError):
        return False


def kinetics_csv(
    csv_path: str,
    root: str,
    label_names: Sequence[str] | None = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
) -> Records:
    """Videos of a Kinetics CSV under `root`, in any of the common on-disk layouts.

    Files are matched on the 11-character YouTube id that starts every file name, so the
    downloader tree `<label>/<id>_<start:06d>_<end:06d>.mp4`, the CVDF flat folders and
    renamed class folders all work. When one id has several files, the one whose name has the
    CSV's start/end times wins. `label_names` defaults to the CSV's sorted labels.
    """
    rows = read_kinetics_csv(csv_path)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Video folder {root!r} does not exist.")
    index: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    for path in _scan(root, extensions, skipped):
        stem = os.path.splitext(os.path.basename(path))[0]
        index.setdefault(stem[:YOUTUBE_ID_LENGTH], []).append(path)
    has_labels = bool(rows) and "label" in rows[0]
    if label_names is None:
        label_names = sorted({r["label"] for r in rows if r.get("label")}) if has_labels else []
    lookup = {_normalise(n): i for i, n in enumerate(label_names)}
    paths, labels, missing = [], [], []
    for row in rows:
        vid = row["youtube_id"]
        start, end = int(float(row.get("time_start") or 0)), int(float(row.get("time_end") or 0))
        candidates = index.get(vid, [])
        label = row.get("label") if has_labels else None
        if not candidates:
            missing.append(f"{vid}_{start:06d}_{end:06d}")
            continue
        wanted = f"{vid}_{start:06d}_{end:06d}"
        chosen = next(
            (p for p in candidates if os.path.basename(p).startswith(wanted)), candidates[0]
        )
        if label:
            key = _normalise(label)
            if key not in lookup:
                raise UnknownClassError(
                    f"Label {label!r} in {csv_path!r} is not one of the {len(label_names)} "
                    "label names (pass label_names=None to index the CSV's own labels).",
                    [label], label_names,
                )
            labels.append(lookup[key])
        else:
            labels.append(-1)
        paths.append(chosen)
    return Records(paths, labels, list(label_names), missing, skipped)


def from_pairs(pairs: Iterable[tuple[str, int]], label_names: Sequence[str] | None = None):
    """Records from `(path, label)` pairs (label an int index, a name, or None)."""
    pairs = list(pairs)
    if label_names is None:
        names = sorted({lab for _, lab in pairs if isinstance(lab, str)})
    else:
        names = list(label_names)
    lookup = {_normalise(n): i for i, n in enumerate(names)}
    labels = []
    for path, lab in pairs:
        if isinstance(lab, str):
            if _normalise(lab) not in lookup:
                raise UnknownClassError(
                    f"Label {lab!r} of {path!r} is not a known class: it is not one of the "
                    f"{len(names)} label names ({_preview(names)}).", [lab], names,
                )
            labels.append(lookup[_normalise(lab)])
        else:
            labels.append(-1 if lab is None else int(lab))
    if not names and labels:
        names = [str(i) for i in range(max(labels) + 1)]
    return Records([str(p) for p, _ in pairs], labels, names)


def reindex(records: Records, label_names: Sequence[str]) -> Records:
    """`records` labelled by class name onto the indices of `label_names` (e.g. a model's).

    Records index their own class names (sorted folder or CSV names); a model indexes the
    names it was trained on. A split that holds only some of the model's classes would
    otherwise number them 0, 1, ... and score every video against the wrong class. A subset of
    `label_names` is fine; a class with videos that is not among them is an error naming it.

    >>> r = Records(["a.mp4", "b.mp4"], [0, 1], ["approaching", "receding"])
    >>> reindex(r, ["approaching", "moving_left", "receding"]).labels
    [0, 2]
    """
    names = list(label_names)
    if list(records.label_names) == names:
        return records
    lookup = {_normalise(n): i for i, n in enumerate(names)}
    used = sorted({label for label in records.labels if label >= 0})
    mapping: dict[int, int] = {}
    unknown = []
    for old in used:
        if old >= len(records.label_names):
            raise ValueError(
                f"Label index {old} has no class name (the records name "
                f"{len(records.label_names)} classes), so it cannot be matched to label_names."
            )
        key = _normalise(records.label_names[old])
        if key in lookup:
            mapping[old] = lookup[key]
        else:
            unknown.append(records.label_names[old])
    if unknown:
        raise UnknownClassError(
            f"{len(unknown)} classes of the data are not known classes: {_preview(unknown)}; "
            f"they are not among the {len(names)} label names ({_preview(names)}).",
            unknown, names,
        )
    labels = [mapping[label] if label >= 0 else -1 for label in records.labels]
    return dataclasses.replace(records, labels=labels, label_names=names)


def _preview(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")


def resolve(source, root: str | None = None, label_names: Sequence[str] | None = None) -> Records:
    """Records from a Kinetics CSV, a list file, a class-folder tree or `(path, label)` pairs.

    With `label_names`, labels index those names (matched by class name); see `reindex`.
    """
    if isinstance(source, Records):
        return source if label_names is None else reindex(source, label_names)
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if os.path.isdir(source):
            return class_folders(source, label_names)
        if not os.path.exists(source):
            raise FileNotFoundError(f"{source!r} is neither a video folder nor a list/CSV file.")
        if is_kinetics_csv(source):
            if root is None:
                raise ValueError("A Kinetics CSV needs root= (the folder holding the videos).")
            return kinetics_csv(source, root, label_names)
        return list_file(source, root, label_names)
    return from_pairs(source, label_names)
