"""What the sidecar's HTTP server passes around: requests, responses, and the app it serves.

:func:`parse_head` reads a request's head, :func:`encode_head` writes a response's
(HTTP/1.1, ``Content-Length`` always, ``Connection: close`` when closing). A listener's
:class:`App` answers a :class:`Request` from its head alone (:meth:`App.head`) or after
its body (:meth:`App.handle`) with a :class:`Response`, or with a :class:`Render` — work
too heavy for the event loop, run by a render worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Request:
    """One parsed request; ``body`` is filled in once it has arrived."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: bytes = b""
    version: str = "HTTP/1.1"
    keep_alive: bool = True  # what the request asks of the connection after it


def parse_head(head: bytes) -> Request | None:
    """The request in ``head`` (up to its blank line), or None if it is not HTTP/1.x."""
    line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    method, target, version = parts
    headers = {}
    for header in header_lines:
        name, _, value = header.partition(":")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = (version == "HTTP/1.1" and connection != "close") or connection == "keep-alive"
    path, _, query = target.partition("?")
    return Request(method, path, dict(parse_qsl(query)), headers, b"", version, keep_alive)


@dataclass
class Response:
    """What to send back; ``close`` ends the connection after it; HEAD omits the body."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False
    omit_body: bool = False


def encode_head(response: Response, *, close: bool) -> bytes:
    """The status line and headers of ``response``, through the blank line that ends them."""
    lines = [
        f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Error')}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        *(f"{k}: {v}" for k, v in response.headers.items()),
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Render:
    """Work too heavy for the event loop, run by a render worker; returns the response."""

    work: Callable[[], Response]
    lane: str = "metrics"  # which render lane queues it (renders.LANES)
    share: str | None = None  # requests with the same key may share one rendering


def json_response(status: int, doc: Any, *, close: bool = False) -> Response:
    """A compact JSON response."""
    return Response(status, json.dumps(doc, separators=(",", ":")).encode(), close=close)


class App(Protocol):
    """What a listener serves."""

    def head(self, request: Request, length: int) -> Response | Render | None:
        """Answer from the head alone, or None to read the ``length``-byte body first."""

    def handle(self, request: Request) -> Response | Render:
        """Answer a request whose body has arrived."""
