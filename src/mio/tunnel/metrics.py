"""A status endpoint: Prometheus text metrics over HTTP (``--metrics [HOST:]PORT``).

:func:`serve_metrics` answers ``GET /metrics`` (and ``GET /``) with what ``render()``
returns, in the Prometheus text exposition format (version 0.0.4), and 404 to any other
path; one request per connection, request heads up to 8 KiB read within 5 s. Bind it to
loopback (the default) or to an address only your monitoring can reach: it needs no
secret, and it tells who is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping

from .._oneport import create_on_one_port

__all__ = ("Metric", "render", "serve_metrics", "HEAD_LIMIT", "HEAD_TIMEOUT")

log = logging.getLogger("mio.tunnel.metrics")

#: Longest request head read, and the time allowed to send it.
HEAD_LIMIT = 8 * 1024
HEAD_TIMEOUT = 5.0

#: ``(name, kind, help, samples)``; samples map a label set (tuple of pairs) to a value.
Metric = tuple[str, str, str, Mapping[tuple[tuple[str, str], ...], float]]


def render(metrics: Iterable[Metric]) -> str:
    """The exposition text of ``metrics``."""
    lines: list[str] = []
    for name, kind, help_text, samples in metrics:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples.items():
            shown = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            number = int(value) if float(value).is_integer() else value
            lines.append(f"{name}{{{shown}}} {number}" if shown else f"{name} {number}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def serve_metrics(host: str | None, port: int, text: Callable[[], str]) -> asyncio.Server:
    """Listen on ``host:port`` and answer scrapes with ``text()``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            if len(head) > HEAD_LIMIT:
                raise ValueError("request head too long")
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0]
            if method != "GET":
                status, body = "405 Method Not Allowed", "only GET\n"
            elif path.split("?", 1)[0] in ("/metrics", "/"):
                status, body = "200 OK", text()
            else:
                status, body = "404 Not Found", "try /metrics\n"
            data = body.encode("utf-8")
            writer.write(
                f"HTTP/1.1 {status}\r\n"
                "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode("latin-1")
                + data
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except (ValueError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await create_on_one_port(
        lambda p: asyncio.start_server(handle, host, p, limit=HEAD_LIMIT), port
    )
