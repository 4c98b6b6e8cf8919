"""Structured JSON logs: one object per line, with the request id; secrets never logged.

Only allow-listed ``extra`` fields are emitted (request id, method, route, status, duration, key
id, job id, …), so a header, a body or an API key cannot reach the log by accident.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

__all__ = ["JsonFormatter", "configure_logging", "request_id_var", "uvicorn_log_config"]

request_id_var: ContextVar[str | None] = ContextVar("pf_request_id", default=None)

_FIELDS = (
    "request_id",
    "method",
    "route",
    "path",
    "status",
    "duration_ms",
    "key_id",
    "tenant",
    "job_id",
    "dataset_id",
    "action",
    "client",
    "state",
    "worker",
)


def _gmtime(seconds: float | None = None) -> time.struct_time:
    return time.gmtime(seconds)


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object (UTC timestamps)."""

    def __init__(self) -> None:
        super().__init__()
        self.converter = _gmtime

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            data["request_id"] = rid
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None and name != "request_id":
                data[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            data["error"] = record.exc_info[0].__name__
        return json.dumps(data, default=str)


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for the ``privacy_finetuner`` loggers (idempotent)."""
    logger = logging.getLogger("privacy_finetuner")
    logger.setLevel(level.upper())
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        formatter = JsonFormatter()
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        logger.propagate = False


def uvicorn_log_config(level: str = "INFO") -> dict[str, Any]:
    """``logging.config.dictConfig`` for uvicorn's own loggers, in the same JSON format.

    uvicorn's access log stays off: the service middleware writes one access line per request.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "privacy_finetuner.service.logs.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
        },
    }
