"""What ``regression-lab serve`` runs inside LitServe: the typed request, the model's API, and the
few request checks FastAPI does not make. Imported by :mod:`regression_lab.serve` once LitServe's
API key is set (LitServe reads it when it is imported).

- :class:`PredictRequest` is validated by FastAPI before LitServe queues it (422 for anything
  but ``{"x": number}`` or ``{"x": [numbers]}``): LitServe answers an error raised for one
  request of a batch to every request of that batch, so none may reach the batch;
- :class:`BodyLimits` answers 415, 413 and 400 for what FastAPI does not check;
- :class:`RegressionAPI` batches the x values of concurrent requests into one forward pass.
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation as the
# request model FastAPI validates, and a postponed annotation would be a string.
from typing import Annotated, Any, ClassVar

import litserve as ls
from pydantic import BaseModel, ConfigDict, Field, field_validator

from regression_lab.errors import FLOAT32_MAX, quote

Number = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]


class PredictRequest(BaseModel):
    """``{"x": number}`` or ``{"x": [numbers]}``: finite, within float32's range, no other field."""

    model_config = ConfigDict(extra="forbid")
    #: The longest list of x one request may send (``--max_items``).
    max_items: ClassVar[int] = 10_000
    x: Number | list[Number]

    @field_validator("x")
    @classmethod
    def _length(cls, x: float | list[float]) -> float | list[float]:
        if isinstance(x, list) and not 1 <= len(x) <= cls.max_items:
            raise ValueError(f"x must hold 1 to {cls.max_items} values, got {len(x)}")
        return x


def one_line_errors(request: Any, exc: Any) -> Any:
    """FastAPI's validation errors as one line (``{"detail": "..."}``): 400 for a body that is not
    JSON, 422 for JSON that is not a request."""
    from fastapi.responses import JSONResponse

    found = exc.errors()
    status = 400 if any(e.get("type") == "json_invalid" for e in found) else 422
    where = lambda e: "".join(
        f"[{p}]" if isinstance(p, int) else p for p in e.get("loc", ()) if p in ("x",) or isinstance(p, int)
    )  # noqa: E731
    detail = "; ".join(f"{where(e) or 'body'}: {e.get('msg')}" for e in found[:3])
    return JSONResponse({"detail": quote(detail)[1:-1] if len(detail) > 200 else detail}, status_code=status)


def _depth(body: bytes) -> int:
    """How deep a JSON text nests (brackets inside strings counted too: a request has none)."""
    depth = deepest = 0
    for byte in body:
        depth += (byte in b"[{") - (byte in b"]}")
        deepest = max(deepest, depth)
    return deepest


class BodyLimits:
    """ASGI middleware for what FastAPI does not check: 415 for a body not declared JSON, 413 for one
    over ``max_bytes``, and 400 for JSON nested deeper than Python's parser can go."""

    def __init__(self, app: Any, max_bytes: int = 1_000_000, path: str = "/predict") -> None:
        """Args: app: the ASGI app. max_bytes: the largest body. path: the checked path."""
        self.app, self.max_bytes, self.path = app, max_bytes, path

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if headers.get(b"content-type", b"").split(b";")[0].strip().lower() != b"application/json":
            return await self._reject(send, 415, 'send JSON with Content-Type: application/json, e.g. {"x": 10}')
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._reject(send, 413, f"body over {self.max_bytes} bytes")
        if body.count(b"[") + body.count(b"{") > 32 and _depth(body) > 32:  # a request is two deep
            return await self._reject(send, 400, 'body is nested too deep: send {"x": 10} or {"x": [10, 11]}')
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    @staticmethod
    async def _reject(send: Any, status: int, detail: str) -> None:
        body = ('{"detail": "' + detail.replace('"', '\\"') + '"}').encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class RegressionAPI(ls.LitAPI):
    """Predictions of a checkpoint's model for :class:`PredictRequest` bodies."""

    def __init__(self, ckpt_path: str, **kwargs: Any) -> None:
        """Args: ckpt_path: the checkpoint, loaded by each worker. kwargs: ``LitAPI``'s (batching)."""
        super().__init__(**kwargs)
        self.ckpt_path = ckpt_path

    def setup(self, device: str) -> None:
        from regression_lab.predict import Predictor

        self.predictor = Predictor(self.ckpt_path, device)

    def decode_request(self, request: PredictRequest) -> PredictRequest:
        return request

    def batch(self, inputs: list[PredictRequest]) -> list[PredictRequest]:
        return inputs  # requests stay whole; predict runs all their x in one forward pass

    def predict(self, inputs: Any) -> Any:
        single = isinstance(inputs, PredictRequest)  # max_batch_size 1: LitServe hands one request
        requests = [inputs] if single else inputs
        xs = [r.x if isinstance(r.x, list) else [r.x] for r in requests]
        pred, std = self.predictor([x for part in xs for x in part])
        out, start = [], 0
        for r, part in zip(requests, xs, strict=True):
            one = (lambda v: v[0]) if not isinstance(r.x, list) else (lambda v: v)  # noqa: E731
            answer = {"prediction": one(pred[start : start + len(part)])}
            if std is not None:
                answer["std"] = one(std[start : start + len(part)])
            out.append(answer)
            start += len(part)
        return out[0] if single else out

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output
