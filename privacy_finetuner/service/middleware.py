"""Pure-ASGI middleware: request id, body size limit, metrics and the access log.

Pure ASGI (not ``BaseHTTPMiddleware``) keeps the per-request overhead small for the guard
endpoint's throughput target. The route label is the matched path template (``/v1/jobs/{job_id}``),
so metrics have bounded cardinality; unmatched paths are labelled ``<unmatched>``.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from privacy_finetuner.service.logs import request_id_var
from privacy_finetuner.service.metrics import ServiceMetrics

__all__ = ["ServiceMiddleware"]

_log = logging.getLogger("privacy_finetuner.service.access")
_RID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: The streaming upload endpoint has its own (much larger) limit, enforced there as well.
_UPLOAD_RE = re.compile(r"^/v1/datasets/[^/]+/files$")


class _BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit (FastAPI re-raises it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body larger than {limit} bytes")


async def _send_json(send: Send, status: int, body: dict[str, Any], rid: str) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"x-request-id", rid.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class ServiceMiddleware:
    """Wraps the app; see module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServiceMetrics,
        max_body_bytes: int,
        log_requests: bool = True,
        max_upload_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _RID_RE.match(given) else secrets.token_hex(8)
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        limit = self.max_body_bytes
        if (
            self.max_upload_bytes is not None
            and scope["method"] == "POST"
            and _UPLOAD_RE.match(scope.get("path", ""))
        ):
            limit = self.max_upload_bytes

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        try:
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                status = 413
                await _send_json(
                    send, 413, {"detail": f"request body larger than {limit} bytes"}, rid
                )
            else:
                try:
                    await self.app(scope, receive_wrapper, send_wrapper)
                except _BodyTooLarge:
                    status = 413
                    await _send_json(
                        send, 413, {"detail": f"request body larger than {limit} bytes"}, rid
                    )
        finally:
            elapsed = time.perf_counter() - start
            route_obj = scope.get("route")
            route = getattr(route_obj, "path", None) or "<unmatched>"
            self.metrics.observe(
                route=route, method=scope["method"], status=status, seconds=elapsed
            )
            if self.log_requests:
                _log.info(
                    "request",
                    extra={
                        "request_id": rid,
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "key_id": scope["state"].get("key_id"),
                    },
                )
            request_id_var.reset(token)
