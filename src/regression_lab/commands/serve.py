"""The ``serve`` command: a checkpoint's predictions over HTTP, on LitServe. No Lightning Trainer.

``POST /predict`` with ``{"x": 10}`` or ``{"x": [10, 11]}`` answers ``{"prediction": ...}``
(and ``std`` for an ensemble checkpoint); ``GET /health`` answers ``ok`` once the model is
loaded. Concurrent requests are batched into one forward pass (LitServe's batching). Run it::

    regression-lab serve                                   # the newest checkpoint, on 127.0.0.1:8000
    regression-lab serve --ckpt_path run.ckpt --port 9000 --api_key "$KEY"
    curl -s -X POST localhost:8000/predict -H 'Content-Type: application/json' -d '{"x": 10}'
"""

from __future__ import annotations

import ipaddress
import math
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Literal

from jsonargparse import ArgumentParser, Namespace

from regression_lab.commands.options import new_parser
from regression_lab.core.errors import UsageError, check_int

#: The environment variable that may hold the API key instead of ``--api_key`` (kept out of
#: the process list that way).
API_KEY_ENV = "REGRESSION_LAB_API_KEY"


def build_parser() -> ArgumentParser:
    """The ``serve`` command's options."""
    parser = new_parser("serve", "serve a checkpoint's predictions over HTTP (LitServe)")
    parser.add_argument(
        "--ckpt_path", type=str | None, help="checkpoint to serve (default: the newest in ./lightning_logs/)"
    )
    parser.add_argument("--host", type=str, default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    parser.add_argument("--workers", type=int, default=1, help="inference worker processes (per device)")
    parser.add_argument("--max_batch_size", type=int, default=64, help="requests batched into one forward pass")
    parser.add_argument(
        "--batch_timeout", type=float, default=0.005, help="seconds a batch waits to fill before it runs"
    )
    parser.add_argument(
        "--api_key", type=str | None, help=f"require this key in the X-API-Key header (or set ${API_KEY_ENV})"
    )
    parser.add_argument("--max_items", type=int, default=10_000, help="most x values in one request")
    parser.add_argument("--max_body_bytes", type=int, default=1_000_000, help="largest request body accepted")
    parser.add_argument(
        "--accelerator", type=Literal["auto", "cpu", "cuda"], default="auto", help="where the model runs"
    )
    return parser


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args: Namespace) -> int:
    """Run ``serve``: check everything, load the checkpoint once here, then start LitServe."""
    from regression_lab.core.checkpoints import newest_checkpoint
    from regression_lab.core.predictor import Predictor

    check_int("--port", args.port, 1)
    if args.port > 65535:
        raise UsageError(f"--port must be <= 65535, got {args.port}")
    for name in ("workers", "max_batch_size", "max_items", "max_body_bytes"):
        check_int(f"--{name}", args[name], 1)
    if not math.isfinite(args.batch_timeout) or args.batch_timeout < 0:
        raise UsageError(f"--batch_timeout must be a finite number >= 0, got {args.batch_timeout}")
    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    ckpt = Path(args.ckpt_path) if args.ckpt_path else newest_checkpoint()
    predictor = Predictor.load(ckpt)  # a bad or missing checkpoint stops here, in one line
    try:
        with socket.create_server((args.host, args.port)):
            pass  # the address is free (LitServe would fail later, in a worker, with a traceback)
    except OSError as err:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
    if not _loopback(args.host) and key is None:
        print(
            f"warning: serving on {args.host} without an API key: anyone who can reach this machine can use it "
            f"(--api_key or ${API_KEY_ENV})",
            file=sys.stderr,
        )
    if key is not None:
        # LitServe reads its key from the environment when it is imported (here, and in its workers).
        os.environ["LIT_SERVER_API_KEY"] = key
    try:
        import litserve as ls

        from regression_lab.commands.serve_api import JsonBodyGuard, RegressionAPI
    except ImportError as err:
        raise UsageError(f"serve needs LitServe: pip install 'regression-lab[serve]' ({err})") from None

    api = RegressionAPI(
        str(ckpt), max_items=args.max_items, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout
    )
    server = ls.LitServer(
        api,
        accelerator=args.accelerator,
        workers_per_device=args.workers,
        timeout=30,
        middlewares=[(JsonBodyGuard, {"max_bytes": args.max_body_bytes, "max_items": args.max_items, "api_key": key})],
    )
    kind = "an ensemble (mean and std)" if predictor.ensemble else "MyNN"
    print(f"serving {ckpt} ({kind}) on http://{args.host}:{args.port}/predict", file=sys.stderr, flush=True)

    main_pid = os.getpid()

    def stop(signum: int, frame: object) -> None:
        if os.getpid() != main_pid:
            # LitServe's HTTP server process is forked from this one, handler and all; uvicorn
            # raises the signal again once it has shut down gracefully: just end there.
            sys.exit(0)
        raise KeyboardInterrupt  # LitServe's own graceful shutdown: in-flight requests finish

    # SIGTERM (a scheduler, `docker stop`) shuts down as Ctrl-C does; LitServe handles both.
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.run(host=args.host, port=args.port, generate_client_file=False, log_level="warning")
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("serve: stopped", file=sys.stderr)
    return 0
