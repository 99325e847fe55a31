"""Structured logs: one line per request with its id, the id carried into queued work, and no
record ever longer than one line whatever a client sent (docs/OPERATIONS.md).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings

REQUEST_ID_HEADER = "X-Request-ID"
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

request_logger = logging.getLogger("herd.request")


@dataclass
class RequestRecord:
    """What one request (or job) did, for its log line."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    aliases: set[str] = field(default_factory=set)
    cache_hits: int = 0
    cache_misses: int = 0


_current: ContextVar[RequestRecord | None] = ContextVar("herd_request_record", default=None)


def request_id_from(header: str | None) -> str:
    """The incoming id if well-formed (letters, digits, ``._:-``, at most 128), else a new one."""
    if header and _WELL_FORMED.fullmatch(header):
        return header
    return str(uuid.uuid4())


def begin(request_id: str):
    """Start recording under ``request_id``; pass the returned token to ``end``."""
    return _current.set(RequestRecord(request_id))


def end(token) -> None:
    _current.reset(token)


def current() -> RequestRecord | None:
    return _current.get()


def current_request_id() -> str | None:
    record = _current.get()
    return record.request_id if record is not None else None


# URL parts that are credentials (a password-reset link's user and token): the log
# names the route instead of the path.
_SECRET_URL_PARTS = frozenset({"uidb64", "token"})


def loggable_path(request) -> str:
    """The request's path, unless it carries a secret: then its route, such as
    ``.../password/reset/<uidb64>/<token>/``."""
    match = getattr(request, "resolver_match", None)
    if match is not None and _SECRET_URL_PARTS & match.kwargs.keys():
        return "/" + match.route
    return request.path


def log_request(record: RequestRecord, *, method: str, path: str, status: int, user_id: str | None) -> float:
    """Write the request's one line; returns its duration in seconds."""
    duration = time.perf_counter() - record.started
    if request_logger.isEnabledFor(logging.INFO):
        fields = {
            "method": method,
            "path": path,
            "status": status,
            "user_id": user_id,
            "db": sorted(record.aliases),
            "cache_hits": record.cache_hits,
            "cache_misses": record.cache_misses,
            "duration_ms": round(duration * 1000, 2),
        }
        request_logger.info("%s %s %s %.1fms", method, path, status, duration * 1000, extra={"herd": fields})
    return duration


class RequestIdFilter(logging.Filter):
    """Gives each record the id of the request or job it was logged under (``-``: none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id() or "-"
        return True


# Characters that end or rewrite a line in a terminal or a log collector.
_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)} | {
    code: f"\\u{code:04x}" for code in (0x85, 0x2028, 0x2029)
}


def escape_control(text: str) -> str:
    """``text`` with every control character and line separator written as an escape."""
    return text.translate(_CONTROL)


class TextFormatter(logging.Formatter):
    """Readable lines: the record's own line, control characters escaped; a traceback
    or stack follows, each of its lines indented, so no line can pass for a record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_control(super().formatMessage(record))

    def formatException(self, ei) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    return "\n".join("    " + escape_control(line) for line in text.splitlines())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, replica, request_id, message, and the
    structured fields a caller passed as ``extra={"herd": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "replica": settings.HERD_REPLICA_ID,
            "request_id": _request_id_of(record),
            "message": record.getMessage(),
        }
        line.update(getattr(record, "herd", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def _request_id_of(record: logging.LogRecord) -> str | None:
    request_id = getattr(record, "request_id", None)
    if request_id is None or request_id == "-":
        return current_request_id()
    return request_id
