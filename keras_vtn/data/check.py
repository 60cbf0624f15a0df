"""`keras-vtn check-videos ROOT [--csv train.csv]`: find missing, undecodable and short videos.

Every frame of every file is decoded (no colour conversion): damaged data anywhere shows as
`decode_error`, a file whose frames stop short of the count or duration its header declares as
`truncated`. `--quick` decodes only the first frame and one near the end instead (catches cut
files, not damage in the middle). With `--csv` the scan also reports the share of the official
list present. Folder scans list each real file once; the second paths of a file and symlink
loops are reported under `skipped`.

>>> import os, tempfile
>>> from keras_vtn.data.testing import write_video
>>> root = tempfile.mkdtemp()
>>> write_video(os.path.join(root, "good.mp4"), num_frames=30)
>>> open(os.path.join(root, "empty.mp4"), "wb").close()
>>> result = check_videos(root, min_seconds=0.5)
>>> result["num_files"], result["num_ok"], result["problems"]
(2, 1, {'empty': 1})
"""

from __future__ import annotations

import concurrent.futures
import errno
import os
import sys
from collections import Counter

from keras_vtn.data import layouts
from keras_vtn.data.decode import DecodeError, probe, read_frames, scan, stops_short


def check_file(
    path: str, min_frames: int = 1, min_seconds: float = 0.0, full: bool = True
) -> tuple[str, str]:
    """`("ok", "")` or `(reason, detail)` for one video.

    `full` decodes every frame; otherwise only the first frame and one near the end.
    """
    try:
        if full:
            result = scan(path)
            info, declared = result.info, result.info.num_frames
            if result.frames == 0:
                if result.errors:
                    return "decode_error", f"no frame decodes ({result.first_error})"
                return "no_frames", "the video stream holds no frame"
            damaged = result.errors and result.good_after_error
            if not damaged and stops_short(result.frames, declared):
                # a cut file: whatever error there was, nothing decodes after it
                return "truncated", (
                    f"frames stop after {result.frames} of the {declared} the header declares "
                    f"({info.duration:.2f} s at {info.fps:.2f} fps)"
                    + (f"; {result.first_error}" if result.errors else "")
                )
            if result.errors:
                return "decode_error", (
                    f"{result.errors} damaged packets, the first {result.first_error}; "
                    f"{result.frames} of {declared} frames decode"
                )
            num_frames = result.frames
        else:
            info = probe(path)
            last = max(info.num_frames - 2, 0)
            _, decoded = read_frames(path, [last], short_side=32)
            if decoded.truncated:
                return "truncated", decoded.stop_detail
            num_frames = info.num_frames
    except DecodeError as error:
        return error.reason, error.detail
    except Exception as error:
        return "decode_error", repr(error)
    if num_frames < min_frames or num_frames / max(info.fps, 1e-6) < min_seconds:
        return "too_short", f"{num_frames} frames at {info.fps:.2f} fps"
    return "ok", ""


def check_videos(
    root: str,
    csv: str | None = None,
    *,
    min_frames: int = 1,
    min_seconds: float = 0.0,
    workers: int | None = None,
    progress: bool = False,
    full: bool = True,
) -> dict:
    """Scan `root` (and the videos listed in `csv`); returns counts and per-file problems.

    Each file is checked once (`num_files` counts distinct files); `skipped` maps the paths a
    folder scan left out (a second path to a file already listed, a symlink loop) to why.
    """
    if not os.path.isdir(root):
        # an empty result would read as "nothing wrong" for a mistyped path
        raise FileNotFoundError(errno.ENOENT, "No such folder of videos", root)
    missing: list[str] = []
    skipped: dict[str, str] = {}
    if csv:
        records = layouts.kinetics_csv(csv, root) if layouts.is_kinetics_csv(csv) else \
            layouts.list_file(csv, root)
        # two rows naming one file are one file to check
        paths, missing = list(dict.fromkeys(records.paths)), records.missing
        listed = len(records.paths) + len(missing)
        skipped = records.skipped
    else:
        paths = layouts._scan(root, layouts.VIDEO_EXTENSIONS, skipped)
        listed = None
    results: dict[str, tuple[str, str]] = {}
    workers = workers or os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(check_file, p, min_frames, min_seconds, full): p for p in paths}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            results[futures[future]] = future.result()
            if progress and (done % 100 == 0 or done == len(paths)):
                sys.stderr.write(f"\rcheck-videos: {done}/{len(paths)}")
                sys.stderr.flush()
    if progress and paths:
        sys.stderr.write("\n")
    bad = {p: r for p, r in results.items() if r[0] != "ok"}
    return {
        "root": root,
        "num_files": len(paths),
        "num_ok": len(paths) - len(bad),
        "problems": dict(Counter(r for r, _ in bad.values())),
        "files": {p: {"reason": r, "detail": d} for p, (r, d) in sorted(bad.items())},
        "listed": listed,
        "missing": missing,
        "skipped": dict(sorted(skipped.items())),
        "present_fraction": None if listed is None else (len(paths) / listed if listed else 0.0),
    }
