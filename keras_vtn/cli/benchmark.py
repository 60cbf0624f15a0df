"""`keras-vtn benchmark`: times a model's forward pass on random clips (inference throughput).

A thin timer; the repository's `benchmarks/` folder holds the full FLOPs, memory and
per-backend tables (`python -m benchmarks.models`).

examples:
  keras-vtn benchmark --family vivit --num-frames 8 --image-size 64
  keras-vtn benchmark --model runs/vivit/model.keras --batch-size 4
"""

from __future__ import annotations

import json

from keras_vtn.cli.arguments import add_command, add_model_arguments, model_from_args


def add_parser(subparsers) -> None:
    parser = add_command(subparsers, "benchmark", run_benchmark, raw=True, description=__doc__,
                         help="time a model's forward pass on random clips")
    add_model_arguments(parser)
    parser.add_argument("--num-frames", type=int, default=8, help="for --family models")
    parser.add_argument("--image-size", type=int, default=224, help="for --family models")
    parser.add_argument("--num-classes", type=int, default=400, help="for --family models")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--precision", default="float32",
                        choices=["float32", "mixed_float16", "mixed_bfloat16"])


def run_benchmark(args) -> int:
    import keras

    from keras_vtn.benchmark import benchmark_forward

    keras.config.set_dtype_policy(args.precision)
    model = model_from_args(args, num_frames=args.num_frames, image_size=args.image_size,
                            num_classes=args.num_classes)
    result = benchmark_forward(model, args.batch_size, args.warmup, args.iterations)
    result["precision"] = args.precision
    print(json.dumps(result, indent=2))
    return 0
