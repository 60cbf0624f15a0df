"""`keras-vtn data-service dispatcher|worker`: the tf.data service servers that decode videos
for training (`keras_vtn.data.service`)."""

from __future__ import annotations

import argparse

from keras_vtn.cli.arguments import add_command


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "data-service", None, raw=True,
        help="run a tf.data service dispatcher or worker that decodes videos for training",
        description=(
            "Scale decoding out with tf.data service: start one dispatcher, then a worker on "
            "each machine that should decode (every worker must read the videos or shards at "
            "the same paths as the client). Then pass service='grpc://HOST:PORT' to "
            "video_dataset, kinetics400 or tfrecord_dataset."
        ),
        epilog="examples:\n  keras-vtn data-service dispatcher --port 5050 --work-dir "
               "/shared/dispatcher\n  keras-vtn data-service worker --dispatcher host0:5050 "
               "--port 5051\n",
    )
    roles = parser.add_subparsers(dest="role", metavar="ROLE", required=True)
    dispatcher = roles.add_parser("dispatcher", help="hand out the elements of each pass")
    dispatcher.add_argument("--port", type=int, required=True)
    dispatcher.add_argument(
        "--work-dir", help="folder where the dispatcher journals its state, so a restarted "
        "dispatcher resumes its jobs (fault-tolerant mode)")
    dispatcher.set_defaults(func=run_dispatcher)
    worker = roles.add_parser(
        "worker", help="decode the elements the dispatcher hands out",
        description="Runs a tf.data service worker in a child process and starts it again, at "
        "the same address, if it dies (a crash in a decoder, the OOM killer): the dispatcher "
        "never drops a worker, and clients wait for a lost one to come back at its address. "
        "Restart this command with the same --port if it is itself killed.")
    worker.add_argument("--dispatcher", required=True, metavar="HOST:PORT")
    worker.add_argument("--port", type=int, default=0,
                        help="worker port (default: a free one, kept across restarts)")
    worker.add_argument(
        "--host", help="name clients reach this worker by (default: localhost for a local "
        "dispatcher, else this machine's name)")
    # None: the server module's default, without loading TensorFlow's servers for --help
    worker.add_argument("--heartbeat", type=float, default=None,
                        metavar="SECONDS", help="how often to ask the dispatcher for work")
    worker.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                        help="how long to wait for the dispatcher to answer at start "
                        "(default 60)")
    worker.set_defaults(func=run_worker)
    return parser


def run_dispatcher(args: argparse.Namespace) -> int:
    from keras_vtn.data.service import serve_dispatcher

    return serve_dispatcher(args.port, args.work_dir)


def run_worker(args: argparse.Namespace) -> int:
    from keras_vtn.data.service import supervise_worker

    heartbeat = {} if args.heartbeat is None else {"heartbeat": args.heartbeat}
    return supervise_worker(args.dispatcher, port=args.port, host=args.host, wait=args.wait,
                            **heartbeat)
