"""Open every video, decode all its frames, and report problems. With --csv (official Kinetics
CSV or 'path label' list) also report which listed videos are missing and the share present."""

from __future__ import annotations

import argparse
import sys

from keras_vtn.cli.arguments import add_command


def add_parser(subparsers) -> None:
    parser = add_command(subparsers, "check-videos", run, description=__doc__,
                         help="scan a video folder for missing, undecodable and too-short files")
    parser.add_argument("root", help="folder of videos (any layout)")
    parser.add_argument("--csv", help="official Kinetics CSV or list file to compare against")
    parser.add_argument("--min-frames", type=int, default=1)
    parser.add_argument("--min-seconds", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--output", help="write the full report as JSON here")
    parser.add_argument("--list", action="store_true", help="print every problem file")
    parser.add_argument(
        "--quick", action="store_true",
        help="decode only the first frame and one near the end (misses damage in the middle)",
    )


def run(args: argparse.Namespace) -> int:
    from keras_vtn.data.check import check_videos
    from keras_vtn.io_utils import write_json

    result = check_videos(
        args.root, args.csv, min_frames=args.min_frames, min_seconds=args.min_seconds,
        workers=args.workers, progress=sys.stderr.isatty(), full=not args.quick,
    )
    print(f"{result['num_files']} video files, {result['num_ok']} ok")
    for reason, count in sorted(result["problems"].items()):
        print(f"  {reason}: {count}")
    if result["listed"] is not None:
        print(f"{len(result['missing'])} of {result['listed']} listed videos missing; "
              f"{100 * result['present_fraction']:.1f}% present")
    if result["skipped"]:
        print(f"{len(result['skipped'])} paths skipped (second paths to listed files, "
              "symlink loops)")
    if args.list:
        for path, problem in result["files"].items():
            print(f"{problem['reason']}\t{_printable(path)}\t{_printable(problem['detail'])[:120]}")
        for name in result["missing"]:
            print(f"missing\t{_printable(name)}")
        for path, why in result["skipped"].items():
            print(f"skipped\t{_printable(path)}\t{_printable(why)[:120]}")
    if args.output:
        write_json(args.output, result, indent=1)
    return 0 if not result["problems"] else 1


def _printable(text: str) -> str:
    # File names that are not UTF-8 arrive as surrogate escapes, which print() cannot encode.
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
