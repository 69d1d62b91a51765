"""One push exchange with the sidecar, bounded as a whole: one deadline, a small reply.

``urllib``'s ``timeout=`` bounds each socket operation, not the request: a sidecar that
answers one byte every second and a half kept ``urlopen`` inside its first request for
two minutes — no failure counted, nothing logged, reporting silently stopped — and a
500 MB answer was read whole into the app's memory. So a push is done here on a plain
socket: before every operation (connect, TLS handshake, send, each read) its timeout is
set to what is left of the push's single deadline, so the exchange as a whole ends by
then, whatever the peer does; the reply is read up to :data:`MAX_REPLY` bytes and no
further. A host name is resolved in a helper thread that the push waits for only until
its deadline (``getaddrinfo`` has no timeout of its own), and the answer is reused for
:data:`RESOLVE_TTL` seconds.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_REPLY = 64 * 1024
RESOLVE_TTL = 30.0
_resolved: dict[tuple[str, int], tuple[float, Any]] = {}


class ExchangeFailed(Exception):
    """The push did not complete; the message is one line for the log."""


@dataclass
class Reply:
    """The sidecar's answer: status and (at most :data:`MAX_REPLY` bytes of) body."""

    status: int
    body: bytes


def _left(deadline: float, timeout: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ExchangeFailed(f"no complete answer within {timeout:g} s; abandoned")
    return left


def _address(host: str, port: int, deadline: float, timeout: float) -> Any:
    """(family, sockaddr) of ``host``, resolving names within the deadline."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), (host, port)
    cached = _resolved.get((host, port))
    if cached is not None and time.monotonic() - cached[0] < RESOLVE_TTL:
        return cached[1]
    found: list[Any] = []

    def resolve() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0])
        except OSError as exc:
            found.append(exc)

    worker = threading.Thread(target=resolve, name="pool-exporter-resolve", daemon=True)
    worker.start()
    worker.join(_left(deadline, timeout))
    if not found:
        raise ExchangeFailed(f"resolving {host!r} took longer than {timeout:g} s; abandoned")
    if isinstance(found[0], OSError):
        raise ExchangeFailed(f"cannot resolve {host!r}: {found[0]}")
    family, _, _, _, sockaddr = found[0]
    _resolved[(host, port)] = (time.monotonic(), (family, sockaddr))
    return family, sockaddr


def _complete(data: bytearray) -> bool:
    """True once the head and the ``Content-Length`` bytes of body have arrived."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    for line in bytes(data[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(data) - end - 4 >= int(value)
    return False  # no length: the answer ends when the sidecar closes


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Reply:
    """POST ``body`` to ``url`` and read the reply, all within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    parts = urlsplit(url)
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    family, address = _address(host, port, deadline, timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"POST {target} HTTP/1.1",
        f"Host: {parts.netloc.rpartition('@')[2]}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(_left(deadline, timeout))
        sock.connect(address)
        if tls:
            sock.settimeout(_left(deadline, timeout))
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        sock.settimeout(_left(deadline, timeout))
        sock.sendall(request)  # one timeout for the whole sendall (Python >= 3.5)
        data = bytearray()
        while len(data) <= MAX_REPLY and not _complete(data):
            sock.settimeout(_left(deadline, timeout))
            chunk = sock.recv(MAX_REPLY + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise ExchangeFailed(f"no complete answer within {timeout:g} s; abandoned") from None
    finally:
        sock.close()
    status = data.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or not status[0].startswith(b"HTTP/") or not status[1].isdigit():
        raise ExchangeFailed("the sidecar's answer is not HTTP")
    end = data.find(b"\r\n\r\n")
    return Reply(int(status[1]), bytes(data[end + 4 :]) if end >= 0 else b"")
