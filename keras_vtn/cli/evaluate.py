"""Multi-view evaluation: `evaluate_views(model, dataset, aggregate=...)`.

Every video gives `views = num_clips * num_crops` clips; the model scores each view and the
scores are averaged per video as logits, probabilities or log-probabilities. The report states
the protocol as `frames×clips×crops` (e.g. "32×4×3"), top-1/top-5, per-class accuracy, the
confusion matrix and the failed and truncated videos by path; with `output_dir` it is written
as `evaluation.json` and `confusion_matrix.png`.

`keras-vtn evaluate --model runs/x/model.keras` evaluates the way the run was trained: the
sampler, clip length, stride or fps, image size, short side and views come from the run's
`config.json` (for `--family` with registry weights, from the registry's record of the original
evaluation) and the class names from its `labels.txt`; `--preset` brings all of them (flags
override each protocol field); the data are
labelled onto the model's class names, so a split with only some of the classes is scored
against the right ones.
"""

from __future__ import annotations

from keras_vtn.cli.arguments import (
    add_command,
    add_model_arguments,
    add_protocol_arguments,
    model_and_protocol,
    model_label_names,
)
from keras_vtn.evaluation import AGGREGATES


def add_parser(subparsers) -> None:
    parser = add_command(
        subparsers, "evaluate", run_evaluate, raw=True, description=__doc__,
        help="multi-view evaluation: top-1/5, per-class accuracy, JSON + PNG",
    )
    add_model_arguments(parser, preset=True)
    parser.add_argument("--data-root", required=True, help="dataset folder")
    parser.add_argument("--layout", default="kinetics400",
                        choices=["kinetics400", "csv", "folders", "tfrecord"])
    parser.add_argument("--split", default="val")
    add_protocol_arguments(parser)
    parser.add_argument("--aggregate", choices=AGGREGATES,
                        help="how the views' scores are averaged (default: the preset's, else "
                             "logits)")
    parser.add_argument("--batch-size", type=int, default=4, help="videos per batch")
    parser.add_argument("--max-batches", type=int)
    parser.add_argument("--output", default="evaluation", help="folder for the JSON and PNG")


def run_evaluate(args) -> int:
    from keras_vtn.data import dataset_info, make_dataset
    from keras_vtn.data.layouts import UnknownClassError
    from keras_vtn.evaluation import evaluate_views
    from keras_vtn.models.families import takes_frame_indices
    from keras_vtn.protocol import describe_protocol, protocol_kwargs

    model, protocol = model_and_protocol(args)
    print(describe_protocol(protocol), flush=True)
    num_classes = model.output_shape[-1]
    names, label_source = model_label_names(args, model)
    aggregate = args.aggregate or protocol.get("aggregate", "logits")
    kwargs = dict(training=False, batch_size=args.batch_size, views_axis=True,
                  return_frame_indices=takes_frame_indices(model), **protocol_kwargs(protocol))
    if names is not None:
        kwargs["label_names"] = names  # the data are labelled onto the model's classes
    try:
        dataset = make_dataset(args.data_root, args.split, args.layout, **kwargs)
    except UnknownClassError as error:
        if names is None:  # the layout's own class list (Kinetics-400) refused the data
            raise
        # the data layer's advice (index the data's own classes) cannot score this model
        raise UnknownClassError(
            f"the data in {args.data_root!r} hold classes the model does not know: "
            f"{', '.join(repr(n) for n in error.unknown[:8])}. The model's {num_classes} "
            f"classes come from {label_source}; evaluate data of those classes (any subset), "
            "or name the model's classes with --labels.", error.unknown, names,
        ) from None
    if names is None:
        own = dataset_info(dataset).label_names
        if len(own) > num_classes:
            raise SystemExit(
                f"evaluate: the data have {len(own)} classes, the model {num_classes}; give "
                "the model's class names with --labels.")
        print(f"labels: the model's class names are unknown (no labels.txt next to the model, "
              f"no --labels): videos keep the data's own numbering of its {len(own)} classes, "
              "which is right only if the data hold every class the model knows", flush=True)
    else:
        print(f"labels: {num_classes} classes from {label_source}", flush=True)
    report = evaluate_views(model, dataset, aggregate, label_names=names,
                            output_dir=args.output, max_batches=args.max_batches)
    print(f"{report['protocol']} ({report['aggregate']}): top-1 {100 * report['top1']:.2f}%  "
          f"top-5 {100 * report['top5']:.2f}%  on {report['num_videos']} videos")
    if report["failed"] or report["truncated"]:
        print(f"{len(report['failed'])} videos failed, {len(report['truncated'])} truncated "
              "(listed in the JSON)")
    print(f"wrote {report['json_path']} and {report['confusion_png']}")
    return 0
