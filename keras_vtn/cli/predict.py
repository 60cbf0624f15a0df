"""Top-k human-readable predictions for one video file, optionally with a PNG of its frames.

The clip goes through the same decoder, sampler and crops as evaluation
(`keras_vtn.data.video_dataset`), so a prediction sees exactly what the evaluation sees; the
command reads the sampling protocol and class names of the run next to `--model` (its
`config.json` and `labels.txt`), or of `--preset` (its preprocessor and class names), and
flags override them.
"""

from __future__ import annotations

import json
import os
import sys

from keras_vtn.cli.arguments import (
    add_command,
    add_model_arguments,
    add_protocol_arguments,
    labels_from_args,
    model_and_protocol,
)
from keras_vtn.evaluation import AGGREGATES


def add_parser(subparsers) -> None:
    parser = add_command(
        subparsers, "predict", run_predict, raw=True, description=__doc__,
        help="top-5 labels for a video file (optional PNG of the sampled frames)",
    )
    parser.add_argument("video", nargs="+", help="video file(s)")
    add_model_arguments(parser, preset=True)
    add_protocol_arguments(parser)
    parser.add_argument("--aggregate", choices=AGGREGATES,
                        help="how the views' scores are averaged (default: the preset's, else "
                             "logits)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--frames-png", help="PNG path (one video) or folder (several)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run_predict(args) -> int:
    from keras_vtn.prediction import format_prediction, predict_video
    from keras_vtn.protocol import describe_protocol, protocol_kwargs

    model, protocol = model_and_protocol(args)
    # with --json, stdout carries only the JSON
    print(describe_protocol(protocol), file=sys.stderr if args.json else sys.stdout, flush=True)
    names = labels_from_args(args, model)
    aggregate = args.aggregate or protocol.get("aggregate", "logits")
    results = []
    for video in args.video:
        png = args.frames_png
        if png and len(args.video) > 1:
            os.makedirs(png, exist_ok=True)
            png = os.path.join(png, os.path.splitext(os.path.basename(video))[0] + ".png")
        result = predict_video(
            model, video, label_names=names, aggregate=aggregate, top_k=args.top_k,
            frames_png=png, **protocol_kwargs(protocol),
        )
        result["protocol_description"] = describe_protocol(protocol)
        results.append(result)
        if not args.json:
            print(format_prediction(result))
            if result["frames_png"]:
                print(f"  frames: {result['frames_png']}")
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2,
                         ensure_ascii=False))
    return 0
