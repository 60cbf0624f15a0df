"""`keras-vtn check-videos ROOT [--csv train.csv]`: find missing, undecodable and short videos.

Every file is opened, its first frame decoded and a frame near its end decoded (a truncated
file fails there). With `--csv` the scan also reports the share of the official list present.

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

import argparse
import concurrent.futures
import os
import sys
from collections import Counter

from keras_vtn.data import layouts
from keras_vtn.data.decode import DecodeError, probe, read_frames
from keras_vtn.io_utils import write_json


def check_file(path: str, min_frames: int = 1, min_seconds: float = 0.0) -> tuple[str, str]:
    """`("ok", "")` or `(reason, detail)` for one video."""
    try:
        info = probe(path)
        last = max(info.num_frames - 2, 0)
        _, decoded = read_frames(path, [last], short_side=32)
        if decoded.truncated:
            return "truncated", f"stream ends before frame {last} of {info.num_frames}"
    except DecodeError as error:
        return error.reason, error.detail
    except Exception as error:
        return "decode_error", repr(error)
    if info.num_frames < min_frames or info.num_frames / max(info.fps, 1e-6) < min_seconds:
        return "too_short", f"{info.num_frames} frames at {info.fps:.2f} fps"
    return "ok", ""


def check_videos(
    root: str,
    csv: str | None = None,
    *,
    min_frames: int = 1,
    min_seconds: float = 0.0,
    workers: int | None = None,
    progress: bool = False,
) -> dict:
    """Scan `root` (and the videos listed in `csv`); returns counts and per-file problems."""
    missing: list[str] = []
    if csv:
        records = layouts.kinetics_csv(csv, root) if layouts.is_kinetics_csv(csv) else \
            layouts.list_file(csv, root)
        paths, missing = records.paths, records.missing
        listed = len(paths) + len(missing)
    else:
        paths = layouts._scan(root, layouts.VIDEO_EXTENSIONS)
        listed = None
    results: dict[str, tuple[str, str]] = {}
    workers = workers or os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(check_file, p, min_frames, min_seconds): p for p in paths}
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
        "present_fraction": None if listed is None else (len(paths) / listed if listed else 0.0),
    }


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "check-videos",
        help="scan a video folder for missing, undecodable and too-short files",
        description="Open every video, decode its first and last frames, and report problems. "
        "With --csv (official Kinetics CSV or 'path label' list) also report which listed "
        "videos are missing and the share present.",
    )
    parser.add_argument("root", help="folder of videos (any layout)")
    parser.add_argument("--csv", help="official Kinetics CSV or list file to compare against")
    parser.add_argument("--min-frames", type=int, default=1)
    parser.add_argument("--min-seconds", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--output", help="write the full report as JSON here")
    parser.add_argument("--list", action="store_true", help="print every problem file")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    result = check_videos(
        args.root, args.csv, min_frames=args.min_frames, min_seconds=args.min_seconds,
        workers=args.workers, progress=sys.stderr.isatty(),
    )
    print(f"{result['num_files']} video files, {result['num_ok']} ok")
    for reason, count in sorted(result["problems"].items()):
        print(f"  {reason}: {count}")
    if result["listed"] is not None:
        print(f"{len(result['missing'])} of {result['listed']} listed videos missing; "
              f"{100 * result['present_fraction']:.1f}% present")
    if args.list:
        for path, problem in result["files"].items():
            print(f"{problem['reason']}\t{path}\t{problem['detail'][:120]}")
        for name in result["missing"]:
            print(f"missing\t{name}")
    if args.output:
        write_json(args.output, result, indent=1)
    return 0 if not result["problems"] else 1
