"""The agent: runs next to the services, dials the relay and serves the streams it opens.

For each stream the relay opens, the agent reads the ``open`` header, connects to the named
local service (within ``connect_timeout``), answers ``opened`` -- or an ``error``, and the
relay closes the public connection; the session is unaffected -- and pipes bytes both ways.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Mapping

from ..errors import MioError
from ..stream import Stream
from ..wire import ErrorCode
from .addr import format_address
from .lifecycle import Tracker
from .link import Link, LinkOptions
from .metrics import Metric
from .pipe import PipeResult, Pipes, StreamEnd, TcpEnd
from .protocol import TunnelProtocolError, error_message, get_str, read_message, write_message

__all__ = ("AgentOptions", "Agent")

log = logging.getLogger("mio.tunnel.agent")


@dataclasses.dataclass
class AgentOptions:
    """Configuration of an :class:`Agent` (see ``mio tunnel agent --help``)."""

    link: LinkOptions
    services: Mapping[str, tuple[str, int]]
    connect_timeout: float = 5.0
    idle_timeout: float | None = None
    idle_min_bytes: int = 1


class Agent:
    """See the module docstring. ``await run(stop)``, then ``await shutdown(grace)``."""

    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self.link = Link(options.link, self._on_stream)
        self._tracker = Tracker(Pipes(options.idle_timeout, options.idle_min_bytes))
        self._stopping = False
        #: Counters (see :meth:`metrics`).
        self.counts = {"connections_total": 0, "connect_failures": 0, "bytes_in": 0, "bytes_out": 0}

    def metrics(self) -> list[Metric]:
        """The agent's state and counters for :func:`.metrics.render` (``--metrics``)."""
        c = self.counts
        return [
            (
                "mio_tunnel_agent_connected",
                "gauge",
                "1 while the link to the relay is up.",
                {(): 1.0 if self.link.session is not None else 0.0},
            ),
            (
                "mio_tunnel_agent_link_info",
                "gauge",
                "How the link reaches the relay: transport tcp, tls, ws or wss; proxy yes/no.",
                {
                    (
                        ("transport", self.link.options.transport),
                        ("proxy", "yes" if self.link.options.proxy is not None else "no"),
                    ): 1.0
                },
            ),
            (
                "mio_tunnel_agent_links_total",
                "counter",
                "Successful (re)connections to the relay.",
                {(): self.link.connections},
            ),
            (
                "mio_tunnel_connections_active",
                "gauge",
                "Tunneled connections open now.",
                {(): len(self._tracker)},
            ),
            (
                "mio_tunnel_connections_total",
                "counter",
                "Tunneled connections opened.",
                {(): c["connections_total"]},
            ),
            (
                "mio_tunnel_connect_failures_total",
                "counter",
                "Connections to a local service that failed.",
                {(): c["connect_failures"]},
            ),
            (
                "mio_tunnel_bytes_total",
                "counter",
                "Bytes carried by tunneled connections that ended (in: towards the services).",
                {(("direction", "in"),): c["bytes_in"], (("direction", "out"),): c["bytes_out"]},
            ),
        ]

    async def run(self, stop: asyncio.Event) -> int:
        """Keep the relay link up until ``stop``; returns the exit status (see :class:`Link`)."""
        return await self.link.run(stop)

    async def reload(self, services: Mapping[str, tuple[str, int]]) -> bool:
        """Serve ``services`` from now on (SIGHUP). New connections of a name go to its new
        address; open connections are left alone. When the set of names changed, the
        relay is told on the live session (``register``; the next connection registers
        them anyway). Returns False when the relay refused the new names."""
        old = set(self.options.services)
        self.options = dataclasses.replace(self.options, services=dict(services))
        self.link.options = dataclasses.replace(self.link.options, services=list(services))
        log.info("configuration reloaded: services %s", ", ".join(services) or "none")
        session = self.link.session
        if set(services) == old or session is None:
            return True
        try:
            stream = await session.open_stream()
            write_message(stream, {"type": "register", "services": list(services)})
            reply = await asyncio.wait_for(
                read_message(stream, "registered", "error"), self.options.link.auth_timeout
            )
        except (TimeoutError, TunnelProtocolError, MioError) as exc:
            log.warning("the relay did not confirm the new services: %s", exc or "timed out")
            return False
        stream.close()
        if reply["type"] == "error":
            log.error("the relay refused the new services: %s", reply.get("error"))
            return False
        return True

    async def shutdown(self, grace: float, hurry: asyncio.Event | None = None) -> None:
        """Refuse new streams, let tunneled connections finish for up to ``grace`` seconds,
        reset the rest, close the session with FIN."""
        self._stopping = True
        if len(self._tracker):
            log.info("waiting up to %g s for %d connections", grace, len(self._tracker))
        cancelled = await self._tracker.drain(grace, hurry)
        if cancelled:
            log.warning("reset %d connections still open after the grace period", cancelled)
        await self.link.close()

    async def _on_stream(self, stream: Stream) -> None:
        if self._stopping:
            write_message(stream, error_message("unavailable", "the agent is shutting down"))
            return
        with self._tracker.track():
            await self._serve(stream)

    async def _serve(self, stream: Stream) -> None:
        opts = self.options
        try:
            async with asyncio.timeout(opts.link.auth_timeout):  # (no task, as wait_for)
                request = await read_message(stream, "open")
            name = get_str(request, "service", max_length=64)
            origin = str(request.get("peer", "?"))[:200]
        except (TimeoutError, TunnelProtocolError, MioError) as exc:
            log.warning("bad open request from the relay: %s", exc or "timed out")
            stream.reset(ErrorCode.PROTOCOL_ERROR)
            return
        target = opts.services.get(name)
        if target is None:
            log.warning("%s asked for unknown service %r", origin, name)
            write_message(stream, error_message("unknown-service", f"no service {name!r}"))
            return
        host, port = target
        address = format_address(target)
        pipes = self._tracker.pipes
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(opts.connect_timeout):
                _, end = await loop.create_connection(lambda: TcpEnd(pipes), host, port)
        except TimeoutError:
            text = f"timed out connecting to {address} after {opts.connect_timeout:g} s"
        except OSError as exc:
            text = f"cannot connect to {address}: {exc.strerror or exc}"
        else:
            text = ""
        if text:
            self.counts["connect_failures"] += 1
            log.warning("service %r for %s: %s", name, origin, text)
            write_message(stream, error_message("connect", f"service {name!r}: {text}"))
            return
        write_message(stream, {"type": "opened"})
        self.counts["connections_total"] += 1
        log.debug("%s -> %r (%s): open", origin, name, address)
        # From here on callbacks carry the connection: this task (the session's handler)
        # ends, and the stream stays open, owned by the pipe.
        pipes.start(StreamEnd(stream), end, functools.partial(self._done, origin, name))

    def _done(self, origin: str, name: str, result: PipeResult) -> None:
        self.counts["bytes_in"] += result.sent
        self.counts["bytes_out"] += result.received
        result.log_done(log, origin, name)
