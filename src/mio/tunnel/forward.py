"""The forwarder: the ``ssh -L`` direction through the relay.

It listens on a local port and keeps an authenticated session to the relay (role
``forward``). Each local connection becomes a stream to the relay with an ``open`` header
naming a service; the relay opens a stream to the agent serving that name, the agent
connects to the service, and the ``opened`` answer travels back. Services need not be
public on the relay to be reached this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging

from .._oneport import create_on_one_port
from ..errors import MioError
from ..wire import ErrorCode
from .addr import format_address
from .lifecycle import Tracker, announce
from .link import Link, LinkOptions
from .pipe import PipeResult, Pipes, StreamEnd, TcpEnd
from .protocol import TunnelProtocolError, read_message, write_message

__all__ = ("ForwardOptions", "Forwarder")

log = logging.getLogger("mio.tunnel.forward")


@dataclasses.dataclass
class ForwardOptions:
    """Configuration of a :class:`Forwarder` (see ``mio tunnel forward --help``)."""

    link: LinkOptions
    host: str | None
    port: int
    service: str
    connect_timeout: float = 20.0
    idle_timeout: float | None = None
    idle_min_bytes: int = 1


class Forwarder:
    """See the module docstring. ``await start()``, ``await run(stop)``, ``await shutdown()``."""

    def __init__(self, options: ForwardOptions) -> None:
        self.options = options
        self.link = Link(options.link)
        self._tracker = Tracker(Pipes(options.idle_timeout, options.idle_min_bytes))
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen on the local port and print ``forward listening on HOST:PORT``."""
        opts = self.options
        loop = asyncio.get_running_loop()
        self._server = await create_on_one_port(
            lambda p: loop.create_server(self._local_end, opts.host, p), opts.port
        )
        for sock in self._server.sockets:
            announce(f"forward listening on {format_address(sock.getsockname())}")

    async def run(self, stop: asyncio.Event) -> int:
        """Keep the relay link up until ``stop``; returns the exit status."""
        return await self.link.run(stop)

    async def shutdown(self, grace: float, hurry: asyncio.Event | None = None) -> None:
        """Stop listening, let connections finish for up to ``grace`` s, close the session."""
        if self._server is not None:
            self._server.close()
        cancelled = await self._tracker.drain(grace, hurry)
        if cancelled:
            log.warning("reset %d connections still open after the grace period", cancelled)
        await self.link.close()
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def _local_end(self) -> TcpEnd:
        return TcpEnd(self._tracker.pipes, self._on_local)

    def _on_local(self, end: TcpEnd) -> None:
        """A local connection (``connection_made``): a task opens the tunnel; once it is
        open, the pipe's callbacks carry it (no task)."""
        assert end.transport is not None
        origin = format_address(end.transport.get_extra_info("peername"))
        asyncio.get_running_loop().create_task(self._serve_local(origin, end))

    async def _serve_local(self, origin: str, end: TcpEnd) -> None:
        with self._tracker.track():
            try:
                await self._serve(origin, end)
            except Exception:
                log.exception("connection from %s failed", origin)
                end.abort()
            except asyncio.CancelledError:  # shutdown: see Relay._serve_public
                end.abort()

    async def _serve(self, origin: str, end: TcpEnd) -> None:
        opts = self.options
        loop = asyncio.get_running_loop()
        deadline = loop.time() + opts.connect_timeout
        try:
            session = await self.link.wait_ready(opts.connect_timeout)
            stream = await session.open_stream()
        except (TimeoutError, MioError) as exc:
            log.warning("%s: no session to the relay: %s", origin, exc or "timed out")
            end.close()
            return
        try:
            write_message(stream, {"type": "open", "service": opts.service, "peer": origin})
            async with asyncio.timeout_at(deadline):  # (no task, as wait_for)
                reply = await read_message(stream, "opened", "error")
        except (TimeoutError, TunnelProtocolError, MioError) as exc:
            log.warning("%s: opening %r failed: %s", origin, opts.service, exc or "timed out")
            stream.reset(ErrorCode.INTERNAL_ERROR)
            end.close()
            return
        if reply["type"] == "error":
            log.warning("%s: cannot open %r: %s", origin, opts.service, reply.get("error"))
            stream.close()
            end.close()
            return
        log.debug("%s -> %r: open", origin, opts.service)
        self._tracker.pipes.start(end, StreamEnd(stream), functools.partial(self._done, origin))

    def _done(self, origin: str, result: PipeResult) -> None:
        result.log_done(log, origin, self.options.service, sent="out", received="in")
