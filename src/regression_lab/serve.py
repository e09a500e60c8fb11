"""The ``serve`` command: a checkpoint's predictions over HTTP with LitServe (no Lightning Trainer).

``POST /predict`` with ``{"x": 10}`` or ``{"x": [10, 11]}`` answers ``{"prediction": ...}`` in the
same shape (and ``std`` for an ensemble checkpoint); ``GET /health`` answers ``ok`` once the model
is loaded. Concurrent requests are batched into one forward pass (see
:mod:`regression_lab.serve_api`); LitServe checks the API key. Run it::

    regression-lab serve                                   # the newest checkpoint, on 127.0.0.1:8000
    REGRESSION_LAB_API_KEY=secret regression-lab serve --host 0.0.0.0 --port 9000
    curl -s -X POST localhost:8000/predict -H 'Content-Type: application/json' -d '{"x": 10}'
"""

from __future__ import annotations

import math
import os
import socket
import sys
from typing import Literal

from jsonargparse import ArgumentParser, Namespace

from regression_lab import errors
from regression_lab.errors import UsageError, check_int
from regression_lab.files import newest_checkpoint

#: The environment variable that may hold the API key instead of ``--api_key`` (out of the
#: process list that way).
API_KEY_ENV = "REGRESSION_LAB_API_KEY"
#: Where LitServe binds (it refuses other addresses).
HOSTS = ("127.0.0.1", "0.0.0.0", "::")


def build_parser() -> ArgumentParser:
    """The ``serve`` command's options."""
    parser = ArgumentParser(prog="regression-lab serve", description=__doc__.split("\n")[0], exit_on_error=False)
    parser.add_argument("--ckpt_path", type=str | None, help="checkpoint (default: the newest in ./lightning_logs/)")
    parser.add_argument("--host", type=Literal[HOSTS], default="127.0.0.1", help="address (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port, 1024 to 65535")
    parser.add_argument("--workers", type=int, default=1, help="inference worker processes per device")
    parser.add_argument("--max_batch_size", type=int, default=64, help="requests batched into one forward pass")
    parser.add_argument("--batch_timeout", type=float, default=0.005, help="seconds a batch waits to fill")
    parser.add_argument("--api_key", type=str | None, help=f"require this X-API-Key header (or set ${API_KEY_ENV})")
    parser.add_argument("--max_items", type=int, default=10_000, help="most x values in one request")
    parser.add_argument("--max_body_bytes", type=int, default=1_000_000, help="largest request body accepted")
    parser.add_argument(
        "--accelerator", type=Literal["auto", "cpu", "cuda"], default="auto", help="where the model runs"
    )
    return parser


def run(args: Namespace) -> int:
    """Check everything, load the checkpoint once here, then serve until SIGINT or SIGTERM."""
    from regression_lab.predict import Predictor

    check_int("--port", args.port, 1024, 65535)
    for name in ("workers", "max_batch_size", "max_items", "max_body_bytes"):
        check_int(f"--{name}", args[name], 1)
    if not math.isfinite(args.batch_timeout) or args.batch_timeout < 0:
        raise UsageError(f"--batch_timeout must be a finite number >= 0, got {args.batch_timeout}")
    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    ckpt = args.ckpt_path or newest_checkpoint()
    predictor = Predictor(ckpt)  # a bad or missing checkpoint stops here, in one line
    try:
        with socket.create_server(
            (args.host, args.port), family=socket.AF_INET6 if ":" in args.host else socket.AF_INET
        ):
            pass  # the port is free (LitServe would fail later, in a worker, with a traceback)
    except OSError as err:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
    if args.host != "127.0.0.1" and key is None:
        print(f"warning: serving on {args.host} without an API key: anyone who can reach this machine can use it "
              f"(--api_key or ${API_KEY_ENV})", file=sys.stderr)  # fmt: skip
    if key is not None:
        os.environ["LIT_SERVER_API_KEY"] = key  # LitServe reads its key when it is imported
    try:
        import litserve as ls
        from fastapi.exceptions import RequestValidationError

        from regression_lab.serve_api import BodyLimits, PredictRequest, RegressionAPI, one_line_errors
    except ImportError as err:
        raise UsageError(f"serve needs LitServe: pip install 'regression-lab[serve]' ({err})") from None
    PredictRequest.max_items = args.max_items  # the HTTP processes are forked from this one
    api = RegressionAPI(str(ckpt), max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)
    server = ls.LitServer(api, accelerator=args.accelerator, workers_per_device=args.workers, timeout=30,
                          middlewares=[(BodyLimits, {"max_bytes": args.max_body_bytes})])  # fmt: skip
    server.app.add_exception_handler(RequestValidationError, one_line_errors)
    kind = "an ensemble (mean and std)" if predictor.ensemble else "MyNN"
    print(f"serving {ckpt} ({kind}) on http://{args.host}:{args.port}/predict", file=sys.stderr, flush=True)
    # SIGINT and SIGTERM raise errors.Interrupted here, which LitServe's graceful shutdown takes
    # as the KeyboardInterrupt it is: the requests in flight are answered first.
    server.run(host=args.host, port=args.port, generate_client_file=False, log_level="warning")
    if errors.requested() is not None:
        raise errors.Interrupted(errors.requested())
    return 0
