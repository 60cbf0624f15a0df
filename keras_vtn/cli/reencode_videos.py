"""Re-encode every video under SRC to H.264 mp4 under DST (same relative paths), with a key
frame every --keyint frames and the short side scaled to --short-side: clip sampling then
decodes a few frames per clip instead of up to a whole key-frame interval. Existing outputs
are kept, so an interrupted run resumes."""

from __future__ import annotations

import argparse
import sys

from keras_vtn.cli.arguments import add_command


def add_parser(subparsers) -> None:
    parser = add_command(
        subparsers, "reencode-videos", run, description=__doc__,
        help="re-encode a video folder to short side 256 and short key-frame intervals")
    parser.add_argument("src", help="folder of videos (any layout)")
    parser.add_argument("dst", help="output folder")
    parser.add_argument("--short-side", type=int, default=256, help="0 keeps the size")
    parser.add_argument("--keyint", type=int, default=16, help="frames between key frames")
    parser.add_argument("--crf", type=int, default=23, help="x264 quality (lower is better)")
    parser.add_argument("--workers", type=int, default=None)


def run(args: argparse.Namespace) -> int:
    from keras_vtn.data.reencode import reencode_folder

    if args.keyint < 1:
        raise ValueError("--keyint must be >= 1")
    result = reencode_folder(args.src, args.dst, workers=args.workers,
                             progress=sys.stderr.isatty(), short_side=args.short_side or None,
                             keyint=args.keyint, crf=args.crf)
    print(f"{result['done']} re-encoded, {result['kept']} already there, "
          f"{len(result['failed'])} failed")
    for path, why in result["failed"].items():
        print(f"  {path}: {why[:120]}")
    return 1 if result["failed"] else 0
