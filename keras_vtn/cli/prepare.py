"""Decode each video once and write sharded TFRecords of SequenceExamples (JPEG frames, DMVR
layout). Re-running the same command resumes: complete shards are kept. A re-run with other
arguments is refused (the message names each difference) unless --overwrite starts over."""

from __future__ import annotations

import argparse
import sys

from keras_vtn.cli.arguments import add_command


def add_parser(subparsers) -> None:
    parser = add_command(subparsers, "prepare", run, description=__doc__,
                         help="convert videos to sharded TFRecords of JPEG frames")
    parser.add_argument("source", help="Kinetics CSV, 'path label' list file or class-folder root")
    parser.add_argument("output_dir")
    parser.add_argument("--root", help="video folder for a CSV / list file")
    parser.add_argument("--kinetics400", action="store_true",
                        help="index labels by the 400 official Kinetics-400 class names")
    parser.add_argument("--shards", type=int, default=None, help="number of shards")
    parser.add_argument("--videos-per-shard", type=int, default=256)
    parser.add_argument("--short-side", type=int, default=256, help="0 keeps the size")
    parser.add_argument("--fps", type=float, default=None, help="stored frame rate (default: all)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--prefix", default="videos")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over: remove the shards and manifest of an earlier run first")


def run(args: argparse.Namespace) -> int:
    from keras_vtn.data import layouts
    from keras_vtn.data.tfrecord import PrepareArgumentsError, prepare

    names = layouts.KINETICS400_LABELS if args.kinetics400 else None
    try:
        manifest = prepare(
            args.source, args.output_dir, root=args.root, label_names=names,
            num_shards=args.shards, videos_per_shard=args.videos_per_shard,
            short_side=args.short_side or None, fps=args.fps, jpeg_quality=args.quality,
            workers=args.workers, prefix=args.prefix, overwrite=args.overwrite,
        )
    except PrepareArgumentsError as error:
        print(f"keras-vtn prepare: {error}", file=sys.stderr)
        return 2
    print(f"{manifest['num_videos']} videos in {len(manifest['shards'])} shards at "
          f"{args.output_dir}; {manifest['num_failed']} failed, "
          f"{len(manifest['missing'])} listed but missing.")
    return 0
