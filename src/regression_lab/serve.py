"""The ``serve`` command: a checkpoint's predictions over HTTP with LitServe (no Lightning Trainer).
``POST /predict`` with ``{"x": 10}`` or ``{"x": [10, 11]}`` answers ``{"prediction": ...}`` in the same shape (and
``std`` for an ensemble); ``GET /health`` answers ``ok``; concurrent requests are batched into one forward pass::

    REGRESSION_LAB_API_KEY=secret regression-lab serve --host 0.0.0.0 --port 9000    # default: 127.0.0.1:8000
    curl -s -X POST localhost:9000/predict -H 'Content-Type: application/json' -H 'X-API-Key: secret' -d '{"x": 10}'
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation as the request model.
import os
import secrets
import socket
import sys
from typing import Annotated, Any, ClassVar, Literal

import litserve as ls
import torch
from fastapi import Header, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from jsonargparse import ArgumentParser, Namespace
from pydantic import BaseModel, ConfigDict, Field, field_validator

from regression_lab import errors
from regression_lab.errors import FLOAT32_MAX, UsageError, check_int, command_parser, refused_os_errors
from regression_lab.files import chosen_checkpoint
from regression_lab.predict import Predictor

#: The environment variable that may hold the API key instead of ``--api_key`` (out of the process list).
API_KEY_ENV = "REGRESSION_LAB_API_KEY"
#: Seconds a request may wait for its answer (LitServe's timeout: a batch must fill well within it).
REQUEST_TIMEOUT = 30
#: The most x values one request may hold, unless ``--max_items`` says otherwise.
MAX_ITEMS = 10_000
Number = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]


class PredictRequest(BaseModel):
    """``{"x": number}`` or ``{"x": [numbers]}``: finite, within float32's range, no other field. FastAPI validates
    it before LitServe queues it (LitServe answers an error raised for one request to its whole batch)."""

    model_config = ConfigDict(extra="forbid")
    max_items: ClassVar[int] = MAX_ITEMS  #: the longest list of x (``--max_items``, set by run)
    max_abs_x: ClassVar[float] = FLOAT32_MAX  #: the model's finite range (:attr:`Predictor.max_abs_x`)
    x: Number | list[Number]

    @field_validator("x")
    @classmethod
    def _length(cls, x: float | list[float]) -> float | list[float]:
        if isinstance(x, list) and not 1 <= len(x) <= cls.max_items:
            raise ValueError(f"x must hold 1 to {cls.max_items} values, got {len(x)}")
        if any(abs(v) > cls.max_abs_x for v in (x if isinstance(x, list) else [x])):
            raise ValueError(f"x must lie within +-{cls.max_abs_x:.4g}: further out this model's prediction "
                             "overflows float32")  # fmt: skip
        return x


def one_line_errors(request: Any, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's validation errors as one line: 400 for a body that is not JSON, 422 for JSON that is not a request."""
    found, parts = exc.errors(), []
    for e in found[:2]:
        where = [f"[{p}]" if isinstance(p, int) else p for p in e.get("loc", ()) if p == "x" or isinstance(p, int)]
        parts.append(f"{''.join(where) or 'body'}: {e.get('msg')}")  # x, x[2], or the body itself
    status = 400 if found and found[0].get("type") == "json_invalid" else 422
    return JSONResponse({"detail": "; ".join(parts)}, status_code=status)  # messages, not the values sent


class JSONOnly:
    """ASGI middleware: 415 for a ``POST /predict`` body not declared JSON (FastAPI would answer 422)."""

    def __init__(self, app: Any) -> None:
        """Args: app: the ASGI application it wraps."""
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = dict(scope.get("headers", [])).get(b"content-type", b"").split(b";")[0].strip().lower()
        posted = scope["type"] == "http" and scope["path"] == "/predict" and scope["method"] == "POST"
        if posted and kind != b"application/json":
            detail = 'send JSON with Content-Type: application/json, e.g. {"x": 10}'
            return await JSONResponse({"detail": detail}, status_code=415)(scope, receive, send)
        return await self.app(scope, receive, send)


class RegressionAPI(ls.LitAPI):
    """Predictions of a checkpoint's model for :class:`PredictRequest` bodies, batched."""

    def __init__(self, ckpt_path: str, api_key: str | None = None, **kwargs: Any) -> None:
        """Args: ckpt_path: the checkpoint, loaded by each worker. api_key: the key every request
        must carry as ``X-API-Key`` (None: none). kwargs: ``LitAPI``'s (batching)."""
        super().__init__(**kwargs)
        self.ckpt_path, self.api_key = ckpt_path, api_key

    def authorize(self, x_api_key: str | None = Header(None)) -> None:
        # The header's latin-1 bytes against the key's UTF-8, in constant time: any byte in either is a 401, not a 500.
        given = (x_api_key or "").encode("latin-1")
        if self.api_key is not None and not secrets.compare_digest(given, self.api_key.encode()):
            raise HTTPException(401, "missing or wrong X-API-Key header")

    def setup(self, device: str) -> None:
        self.predictor = Predictor(self.ckpt_path, device)

    def decode_request(self, request: PredictRequest) -> PredictRequest:
        return request

    def predict(self, inputs: Any) -> Any:
        # LitServe's default batch keeps the requests whole: all their x go through one forward pass.
        requests = [inputs] if isinstance(inputs, PredictRequest) else inputs  # max_batch_size 1: one request
        xs = [r.x if isinstance(r.x, list) else [r.x] for r in requests]
        pred, std = self.predictor([x for part in xs for x in part])
        out, start = [], 0
        for r, part in zip(requests, xs, strict=True):
            got, start = slice(start, start + len(part)), start + len(part)
            one = (lambda v: v) if isinstance(r.x, list) else (lambda v: v[0])  # noqa: E731
            out.append({"prediction": one(pred[got]), **({"std": one(std[got])} if std is not None else {})})
        return out[0] if isinstance(inputs, PredictRequest) else out


def build_parser() -> ArgumentParser:
    parser = command_parser("serve", __doc__)
    add = parser.add_argument
    add("--ckpt_path", type=str | None, help="checkpoint (default: the newest in ./lightning_logs/)")
    add("--host", type=Literal["127.0.0.1", "0.0.0.0", "::"], default="127.0.0.1", help="address (0.0.0.0: all)")
    add("--port", type=int, default=8000, help="TCP port, 1024 to 65535")
    add("--workers", type=int, default=1, help="inference worker processes per device")
    add("--max_batch_size", type=int, default=64, help="requests batched into one forward pass")
    add("--batch_timeout", type=float, default=0.005, help="seconds a batch waits to fill")
    add("--api_key", type=str | None, help=f"require this X-API-Key header (or set ${API_KEY_ENV})")
    add("--max_items", type=int, default=MAX_ITEMS, help="most x values in one request")
    add("--max_body_bytes", type=int, default=1_000_000, help="largest request body accepted")
    add("--accelerator", type=Literal["auto", "cpu", "cuda"], default="auto", help="where the model runs")
    return parser


def run(args: Namespace) -> None:
    """Check everything, load the checkpoint once here, then serve until SIGINT or SIGTERM."""
    check_int("--port", args.port, 1024, 65535)
    for name in ("workers", "max_batch_size", "max_items", "max_body_bytes"):
        check_int(f"--{name}", args[name], 1)
    if not 0 <= args.batch_timeout < REQUEST_TIMEOUT:  # NaN and inf fail it too
        raise UsageError(f"--batch_timeout must be a finite number >= 0 and below the {REQUEST_TIMEOUT} s a request "
                         f"may wait, got {args.batch_timeout}")  # fmt: skip
    if args.accelerator == "cuda" and not torch.cuda.is_available():
        raise UsageError("--accelerator cuda: this machine has no CUDA device (use auto or cpu)")
    key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    if key is not None and not key.strip():  # an unset variable in `--api_key "$KEY"`
        raise UsageError(f"the API key (--api_key or ${API_KEY_ENV}) is empty: give the key, or leave both out to "
                         "serve without one")  # fmt: skip
    ckpt = chosen_checkpoint(args.ckpt_path)
    predictor = Predictor(ckpt)  # a bad or missing checkpoint stops here, in one line
    family, address = socket.AF_INET6 if ":" in args.host else socket.AF_INET, (args.host, args.port)
    with refused_os_errors(f"cannot listen on {args.host}:{args.port}"), socket.create_server(address, family=family):
        pass  # the port is free (LitServe would fail later, in a worker, with a traceback)
    if args.host != "127.0.0.1" and key is None:
        print(f"warning: serving on {args.host} without an API key: anyone who can reach this machine can use it "
              f"(--api_key or ${API_KEY_ENV})", file=sys.stderr)  # fmt: skip
    # The HTTP processes are forked from this one: they validate with these.
    PredictRequest.max_items, PredictRequest.max_abs_x = args.max_items, predictor.max_abs_x
    api = RegressionAPI(str(ckpt), key, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)
    # LitServe's own size limit counts the body as it arrives (413), so a huge body is never held whole.
    server = ls.LitServer(api, accelerator=args.accelerator, workers_per_device=args.workers, timeout=REQUEST_TIMEOUT,
                          middlewares=[JSONOnly], max_payload_size=args.max_body_bytes)  # fmt: skip
    server.app.add_exception_handler(RequestValidationError, one_line_errors)
    kind = "an ensemble (mean and std)" if predictor.ensemble else "MyNN"
    where = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address is bracketed in a URL
    print(f"serving {ckpt} ({kind}) on http://{where}:{args.port}/predict", file=sys.stderr, flush=True)
    # A signal raises errors.Interrupted, a KeyboardInterrupt: LitServe answers the requests in flight, then stops.
    server.run(host=args.host, port=args.port, generate_client_file=False, log_level="warning")
    if errors.requested() is not None:
        raise errors.Interrupted(errors.requested())
