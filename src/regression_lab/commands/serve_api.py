"""What ``regression-lab serve`` runs inside LitServe: the request checks and the model's API.

- :class:`JsonBodyGuard` (ASGI middleware) answers every bad request before the model's queue
  sees it: 401 without the API key, 415 for a body that is not declared JSON, 413 for one over
  the size limit, 400 for one that does not parse, 422 for one that is not ``{"x": number}`` or
  ``{"x": [numbers]}`` (missing or extra fields, a string, NaN or inf, an empty or too long
  list). Here and not in ``decode_request``, because LitServe answers an error raised for one
  request of a batch to every request of that batch.
- :class:`RegressionAPI` (a ``litserve.LitAPI``) batches the x values of concurrent requests
  into one forward pass and answers ``{"prediction": ...}`` (and ``std`` for an ensemble
  checkpoint). Started by :mod:`regression_lab.commands.serve`.
"""

from __future__ import annotations

import json
import math
import secrets
from typing import Any

import litserve as ls
from fastapi import HTTPException

from regression_lab.core.errors import FLOAT32_MAX, brief


async def _reject(send: Any, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class JsonBodyGuard:
    """ASGI middleware for the prediction path: the key, the content type, the size, the JSON."""

    def __init__(
        self,
        app: Any,
        path: str = "/predict",
        max_bytes: int = 1_000_000,
        max_items: int = 10_000,
        api_key: str | None = None,
    ) -> None:
        """Args: app: the ASGI app. path: the guarded path. max_bytes: the largest body accepted.
        max_items: the longest list of x. api_key: the key every request must carry in
        ``X-API-Key`` (``None``: no key)."""
        self.app, self.path, self.max_bytes, self.max_items, self.api_key = app, path, max_bytes, max_items, api_key

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None:
            given = headers.get(b"x-api-key", b"").decode("latin-1")
            if not secrets.compare_digest(given, self.api_key):
                return await _reject(send, 401, "missing or wrong X-API-Key header")
        if scope["path"] != self.path or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if kind != b"application/json":
            return await _reject(send, 415, 'send JSON with Content-Type: application/json, e.g. {"x": 10}')
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await _reject(send, 413, f"body over {self.max_bytes} bytes")
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await _reject(send, 413, f"body over {self.max_bytes} bytes")
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return await _reject(send, 400, 'body is not valid JSON; send {"x": 10} or {"x": [10, 11]}')
        try:
            parse_x(parsed, self.max_items)
        except ValueError as err:
            return await _reject(send, 422, str(err))
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} must be a number, got {type(value).__name__}")
    try:
        x = float(value)
    except OverflowError:  # a JSON integer of hundreds of digits
        x = math.inf
    if not math.isfinite(x) or abs(x) > FLOAT32_MAX:
        raise ValueError(f"{where} must be a finite number within float32's range, got {brief(value)}")
    return x


def parse_x(request: Any, max_items: int) -> tuple[list[float], bool]:
    """The x values of a parsed request body, and whether it sent one number (not a list);
    :class:`ValueError` says what is wrong with any other body."""
    if not isinstance(request, dict) or set(request) != {"x"}:
        got = sorted(request) if isinstance(request, dict) else type(request).__name__
        raise ValueError(f'body must be {{"x": number}} or {{"x": [numbers]}}, got {got}')
    x = request["x"]
    if isinstance(x, list):
        if not x:
            raise ValueError("x is an empty list")
        if len(x) > max_items:
            raise ValueError(f"x has {len(x)} values, more than the {max_items} allowed per request")
        return [_number(v, f"x[{i}]") for i, v in enumerate(x)], False
    return [_number(x, "x")], True


class RegressionAPI(ls.LitAPI):
    """Predictions of a checkpoint's model for ``{"x": number}`` or ``{"x": [numbers]}``."""

    def __init__(self, ckpt_path: str, max_items: int = 10_000, **kwargs: Any) -> None:
        """Args: ckpt_path: the checkpoint, loaded with ``weights_only=True`` by each worker.
        max_items: the longest list of x one request may send. kwargs: ``LitAPI``'s (batching)."""
        super().__init__(**kwargs)
        self.ckpt_path, self.max_items = ckpt_path, max_items

    def setup(self, device: str) -> None:
        import torch

        from regression_lab.core.predictor import Predictor

        torch.set_grad_enabled(False)
        self.device = device
        self.predictor = Predictor.load(self.ckpt_path, device)

    # `request` stays unannotated and so named: LitServe reads the signature, and an annotation
    # would make FastAPI look for a query parameter instead of the parsed JSON body.
    def decode_request(self, request) -> dict[str, Any]:  # noqa: ANN001
        try:
            xs, scalar = parse_x(request, self.max_items)
        except ValueError as err:  # JsonBodyGuard answers these first; this is the safety net
            raise HTTPException(422, str(err)) from None
        return {"xs": xs, "scalar": scalar}

    def batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return inputs  # requests stay whole; predict runs them in one forward pass

    def predict(self, inputs: Any) -> Any:
        import torch

        single = isinstance(inputs, dict)  # max_batch_size 1: LitServe hands one request
        requests = [inputs] if single else inputs
        flat = [x for r in requests for x in r["xs"]]
        pred, std = self.predictor.predict(torch.tensor(flat, dtype=torch.float32, device=self.device).unsqueeze(1))
        pred = pred.tolist()
        std = std.tolist() if std is not None else None
        out, start = [], 0
        for r in requests:
            end = start + len(r["xs"])
            out.append({"prediction": pred[start:end], "std": std[start:end] if std else None, "scalar": r["scalar"]})
            start = end
        return out[0] if single else out

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        pick = (lambda v: v[0]) if output["scalar"] else (lambda v: v)
        answer = {"prediction": pick(output["prediction"])}
        if output["std"] is not None:
            answer["std"] = pick(output["std"])
        return answer
