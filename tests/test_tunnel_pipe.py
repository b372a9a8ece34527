"""The tunnel's copy path (:mod:`mio.tunnel.pipe`) end to end on real sockets: no task per
open connection, flow control both ways with bounded buffers, half-close and resets in
both directions, the shared idle sweeper, many connections at once.

Relay and agent run in the test process (on 127.0.0.1) so that the tests can look at
their buffers and tasks; the services are asyncio protocols (no task of their own).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import struct
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from test_tunnel_hardening import eventually, running_agent, running_relay
from tunnel_util import HOST, SECRET

import mio
from mio.tunnel.agent import Agent
from mio.tunnel.forward import Forwarder, ForwardOptions
from mio.tunnel.link import LINK_CONFIG, LinkOptions
from mio.tunnel.pipe import CHUNK_SIZE, Pipe, Pipes, StreamEnd, TcpEnd
from mio.tunnel.relay import Relay, RelayOptions

KEY = SECRET.encode()
#: Bytes a sender may push into a tunnel whose receiver does not read before it must
#: block: far more than every buffer on the way (kernel buffers of four sockets, a
#: stream window, a transport high-water mark) together.
FLOOD = 256 * 1024 * 1024
#: What one side of the tunnel may buffer for one connection: the stream's receive
#: window at most (LINK_CONFIG.max_window, auto-tuned), plus the transport's high-water
#: mark (64 KiB) and one read (CHUNK_SIZE).
PROCESS_BOUND = LINK_CONFIG.max_window + 64 * 1024 + CHUNK_SIZE


class Service(asyncio.Protocol):
    """A local service with callbacks only: ``echo`` (the default), or what ``on_made``
    makes of the transport."""

    def __init__(self, on_made: Callable[[Service], None] | None = None) -> None:
        self.on_made = on_made
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.eof = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()
        self.paused = False
        self.on_resume: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop: no asyncio.Transport)
        if self.on_made is not None:
            self.on_made(self)

    def data_received(self, data: bytes) -> None:
        if self.on_made is None:
            assert self.transport is not None
            self.transport.write(data)
        else:
            self.received += data

    def eof_received(self) -> bool:
        if not self.eof.done():
            self.eof.set_result(None)
        if self.on_made is None and self.transport is not None:
            self.transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.on_resume is not None:
            self.on_resume()


@contextlib.asynccontextmanager
async def tunnel(
    on_made: Callable[[Service], None] | None = None, **relay_options: Any
) -> AsyncIterator[tuple[Relay, Agent, int, list[Service]]]:
    """Relay and agent in this process, one service; yields (relay, agent, public port,
    the service's connections)."""
    loop = asyncio.get_running_loop()
    made: list[Service] = []

    def factory() -> Service:
        svc = Service(on_made)
        made.append(svc)
        return svc

    server = await loop.create_server(factory, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with (
            running_relay(publics=[("svc", HOST, 0)], **relay_options) as relay,
            running_agent(relay, {"svc": (HOST, port)}) as agent,
        ):
            yield relay, agent, relay.port("svc"), made
    finally:
        server.close()
        for svc in made:
            if svc.transport is not None:
                svc.transport.abort()


def live_pipes(side: Relay | Agent) -> list[Pipe]:
    return list(side._tracker.pipes._live)


def rst(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def ping(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
    return reader, writer


async def read_until_reset(reader: asyncio.StreamReader) -> bytes:
    """What arrives before the connection is reset; fails on a clean EOF."""
    got = bytearray()
    with pytest.raises(ConnectionResetError):
        await read_into(reader, got)
    return bytes(got)


async def read_into(reader: asyncio.StreamReader, got: bytearray) -> None:
    while data := await asyncio.wait_for(reader.read(1024), 5):
        got += data


async def settle(count: Callable[[], int]) -> int:
    """Wait until ``count()`` stopped growing (unchanged over 0.5 s, at most 20 s)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    last, stable = -1, 0
    while stable < 5 and loop.time() < end:
        now = count()
        stable = stable + 1 if now == last else 0
        last = now
        await asyncio.sleep(0.1)
    return last


async def push_until_held(
    writer: asyncio.StreamWriter, block: bytes, who: str
) -> asyncio.Future[None]:
    """Write ``block`` over and over (up to FLOOD) until the tunnel holds the writer back;
    fail unless it does. Returns the pushing task (cancel it when done)."""
    sent = [0]

    async def push() -> None:
        while sent[0] < FLOOD:
            writer.write(block)
            await writer.drain()
            sent[0] += len(block)

    pusher = asyncio.ensure_future(push())
    total = await settle(lambda: sent[0])
    assert not pusher.done(), f"{who} was never held back"
    assert 0 < total < FLOOD
    return pusher


# ============================================================================ tasks
async def test_no_task_per_idle_tunneled_connection(loop_kind: str) -> None:
    async with tunnel() as (relay, agent, port, _):
        (await ping(port))[1].close()  # warm up: whatever per-link task exists, exists now
        await eventually(lambda: relay.connections == 0 and len(agent._tracker) == 0)
        before = len(asyncio.all_tasks())
        held = [await ping(port) for _ in range(50)]
        assert relay.connections == 50
        await eventually(lambda: len(agent._tracker) == 50)
        assert len(asyncio.all_tasks()) == before  # 50 open connections, not one task more
        assert len(live_pipes(relay)) == len(live_pipes(agent)) == 50
        for _, writer in held:
            writer.close()
        await eventually(lambda: relay.connections == 0 and len(agent._tracker) == 0)


#: docs/TUNNEL.md: "under 16 KiB per idle tunneled connection" (target (d) of issue 17).
IDLE_CONNECTION_BUDGET = 16 * 1024


async def test_an_idle_tunneled_connection_costs_under_16_kib() -> None:
    """Python memory per idle connection, relay and agent and both services' ends (the
    echo service's transport, the client's socket) included: an upper bound of what the
    tunnel holds, deterministic where RSS is not."""
    loop = asyncio.get_running_loop()
    async with tunnel(max_source_connections=1000) as (relay, agent, port, _):
        (await ping(port))[1].close()
        await eventually(lambda: relay.connections == 0 and len(agent._tracker) == 0)
        socks = []
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(200):
                sock = socket.socket()
                sock.setblocking(False)
                await loop.sock_connect(sock, (HOST, port))
                await loop.sock_sendall(sock, b"p")
                assert await asyncio.wait_for(loop.sock_recv(sock, 1), 5) == b"p"
                socks.append(sock)
            await eventually(lambda: len(agent._tracker) == 200)
            per_connection = (tracemalloc.get_traced_memory()[0] - before) / 200
        finally:
            tracemalloc.stop()
        assert per_connection < IDLE_CONNECTION_BUDGET, per_connection
        for sock in socks:
            sock.close()
        await eventually(lambda: relay.connections == 0 and len(agent._tracker) == 0)


# ============================================================================ flow control
async def test_before_the_tunnel_is_open_at_most_one_read_waits(loop_kind: str) -> None:
    """A TCP end reads nothing until its pipe is attached, whatever the client sends
    (uvloop reads once after ``connection_made`` although it was paused: one read waits,
    and reading stops again)."""
    loop = asyncio.get_running_loop()
    pipes = Pipes()
    ends: list[TcpEnd] = []

    def factory() -> TcpEnd:
        ends.append(TcpEnd(pipes))
        return ends[-1]

    server = await loop.create_server(factory, HOST, 0)
    _, writer = await asyncio.open_connection(HOST, server.sockets[0].getsockname()[1])
    try:
        writer.write(b"x" * (16 * 1024 * 1024))
        await eventually(lambda: len(ends) == 1)
        await asyncio.sleep(0.3)
        (end,) = ends
        assert end.transport is not None
        waiting = sum(len(e) for e in end._early or [] if isinstance(e, bytes))
        reading = end.transport.is_reading()
    finally:
        for each in ends:
            each.abort()
        writer.transport.abort()
        server.close()
    assert not reading
    assert waiting <= CHUNK_SIZE, waiting


async def test_a_public_client_that_does_not_read_holds_the_service_back(loop_kind: str) -> None:
    """The service floods, the public client reads nothing: the service must block,
    and what relay and agent buffer for the connection stays bounded."""
    sent = [0]

    def flood(svc: Service) -> None:
        assert svc.transport is not None
        transport = svc.transport
        block = b"s" * (1024 * 1024)

        def more() -> None:  # write until the transport is full, again when it drains
            while not svc.paused and sent[0] < FLOOD and not transport.is_closing():
                transport.write(block)
                sent[0] += len(block)

        svc.on_resume = more
        more()

    async with tunnel(flood) as (relay, agent, port, _):
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.transport.pause_reading()  # a client that reads nothing
        total = await settle(lambda: sent[0])
        assert 0 < total < FLOOD, "the service was never held back"
        (rpipe,) = live_pipes(relay)
        (apipe,) = live_pipes(agent)
        assert isinstance(rpipe.a, TcpEnd)
        assert isinstance(rpipe.b, StreamEnd)
        assert isinstance(apipe.a, StreamEnd)
        assert isinstance(apipe.b, TcpEnd)
        assert rpipe.a.transport is not None
        relay_held = rpipe.a.transport.get_write_buffer_size() + rpipe.b.stream.buffered
        agent_held = apipe.a.stream.write_pending
        assert relay_held <= PROCESS_BOUND, relay_held
        assert agent_held <= PROCESS_BOUND, agent_held
        # ... and the data is intact once the client reads.
        writer.transport.resume_reading()
        got = 0
        while got < 4 * 1024 * 1024:
            data = await asyncio.wait_for(reader.read(1 << 20), 10)
            assert data
            assert data == b"s" * len(data)
            got += len(data)
        rst(writer)


async def test_a_service_that_does_not_read_holds_the_public_client_back(loop_kind: str) -> None:
    paused: list[Service] = []

    def stall(svc: Service) -> None:
        assert svc.transport is not None
        # a service that reads nothing (soon: uvloop reads after connection_made anyway)
        asyncio.get_running_loop().call_soon(svc.transport.pause_reading)
        paused.append(svc)

    async with tunnel(stall) as (relay, agent, port, _):
        _reader, writer = await asyncio.open_connection(HOST, port)
        block = b"c" * (1024 * 1024)
        pusher = await push_until_held(writer, block, "the client")
        (rpipe,) = live_pipes(relay)
        (apipe,) = live_pipes(agent)
        assert isinstance(rpipe.b, StreamEnd)
        assert isinstance(apipe.b, TcpEnd)
        assert isinstance(apipe.a, StreamEnd)
        assert apipe.b.transport is not None
        agent_held = apipe.b.transport.get_write_buffer_size() + apipe.a.stream.buffered
        relay_held = rpipe.b.stream.write_pending
        assert agent_held <= PROCESS_BOUND, agent_held
        assert relay_held <= PROCESS_BOUND, relay_held
        pusher.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await pusher
        (svc,) = paused
        assert svc.transport is not None
        svc.transport.resume_reading()
        await eventually(lambda: len(svc.received) >= 4 * 1024 * 1024, 10)
        assert bytes(svc.received[: 4 * 1024 * 1024]) == block * 4
        rst(writer)


# ============================================================================ half-close
async def test_half_close_from_the_client_then_the_service_answers(loop_kind: str) -> None:
    def answer_after_eof(svc: Service) -> None:
        async def run() -> None:
            await svc.eof
            assert svc.transport is not None
            svc.transport.write(b"answer:" + bytes(svc.received))
            svc.transport.write_eof()

        asyncio.get_running_loop().create_task(run())

    async with tunnel(answer_after_eof) as (relay, agent, port, _made):
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"question")
        writer.write_eof()  # our direction ends; theirs goes on
        assert await asyncio.wait_for(reader.read(), 5) == b"answer:question"  # then EOF
        writer.close()
        await eventually(lambda: relay.connections == 0 and len(agent._tracker) == 0)
        assert relay.counts["bytes_in"] == 8
        assert relay.counts["bytes_out"] == 15


async def test_half_close_from_the_service_while_the_client_still_sends(loop_kind: str) -> None:
    def greet_and_end(svc: Service) -> None:
        assert svc.transport is not None
        svc.transport.write(b"hello")
        svc.transport.write_eof()  # the service's direction ends at once

    async with tunnel(greet_and_end) as (relay, agent, port, made):
        reader, writer = await asyncio.open_connection(HOST, port)
        assert await asyncio.wait_for(reader.read(), 5) == b"hello"  # EOF, not a reset
        payload = os.urandom(3 * 1024 * 1024)
        writer.write(payload)  # our direction still works
        await writer.drain()
        writer.write_eof()
        (svc,) = made
        await asyncio.wait_for(svc.eof, 10)
        assert hashlib.sha256(svc.received).digest() == hashlib.sha256(payload).digest()
        writer.close()
        await eventually(lambda: relay.connections == 0 and len(agent._tracker) == 0)


async def test_what_the_service_sends_at_once_arrives_and_the_connection_goes_on(
    loop_kind: str,
) -> None:
    """A service that speaks first (a banner): its bytes may be read before the pipe
    exists (uvloop reads once before ``connection_made``); they arrive first, and the
    connection keeps flowing both ways."""

    def banner_then_echo(svc: Service) -> None:
        assert svc.transport is not None
        svc.transport.write(b"220 hello\r\n")
        svc.on_made = None  # from now on: echo

    async with tunnel(banner_then_echo) as (relay, agent, port, _):
        for _ in range(5):
            reader, writer = await asyncio.open_connection(HOST, port)
            assert await asyncio.wait_for(reader.readexactly(11), 5) == b"220 hello\r\n"
            writer.write(b"more")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"more"
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        await eventually(lambda: relay.connections == 0 and len(agent._tracker) == 0)


# ============================================================================ resets
async def test_a_client_reset_resets_the_service_connection(loop_kind: str) -> None:
    async with tunnel(lambda svc: None) as (relay, agent, port, made):
        _reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"x" * 1000)
        await eventually(lambda: len(made) == 1 and len(made[0].received) == 1000)
        rst(writer)
        exc = await asyncio.wait_for(made[0].lost, 5)
        assert isinstance(exc, ConnectionResetError), exc  # not a clean EOF
        assert not made[0].eof.done()
        await eventually(lambda: relay.connections == 0 and len(agent._tracker) == 0)


async def test_a_service_reset_mid_transfer_resets_the_client(loop_kind: str) -> None:
    def half_then_reset(svc: Service) -> None:
        assert svc.transport is not None
        svc.transport.write(b"partial answer")
        sock = svc.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        asyncio.get_running_loop().call_later(0.2, svc.transport.abort)

    async with tunnel(half_then_reset) as (relay, agent, port, _):
        reader, writer = await asyncio.open_connection(HOST, port)
        got = await read_until_reset(reader)  # never a clean EOF
        assert got == b"partial answer"[: len(got)]
        writer.close()
        await eventually(lambda: relay.connections == 0 and len(agent._tracker) == 0)
        # the link is unaffected
        await ping_service(port)


async def ping_service(port: int) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write_eof()
    with contextlib.suppress(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 5)
    writer.close()


# ============================================================================ idle sweeper
@pytest.mark.timeout(30)
async def test_one_sweeper_resets_quiet_and_trickling_connections_only() -> None:
    async with tunnel(idle_timeout=0.4, idle_min_bytes=64) as (relay, _agent, port, _):
        loop = asyncio.get_running_loop()

        def timers() -> int:
            return sum(1 for h in loop._scheduled if not h.cancelled())  # type: ignore[attr-defined]

        quiet = [await ping(port) for _ in range(10)]
        trickle = await ping(port)
        busy = await ping(port)
        assert relay._tracker.pipes._sweeper is not None
        assert timers() <= 3  # one sweeper (and the test's own), not one per connection
        stop = asyncio.Event()

        async def send(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, n: int) -> None:
            with contextlib.suppress(ConnectionError):
                while not stop.is_set():
                    writer.write(b"t" * n)
                    await writer.drain()
                    await reader.readexactly(n)
                    await asyncio.sleep(0.05)

        senders = [
            asyncio.ensure_future(send(trickle[1], trickle[0], 1)),  # ~8 bytes per 0.4 s
            asyncio.ensure_future(send(busy[1], busy[0], 100)),  # ~1600 bytes per 0.4 s
        ]
        for reader, _ in [*quiet, trickle]:
            await read_until_reset(reader)
        assert relay.connections == 1  # the busy one
        stop.set()
        await asyncio.gather(*senders)
        busy[1].write_eof()
        assert await asyncio.wait_for(busy[0].read(), 5) == b""  # it ends cleanly
        for _, writer in [*quiet, trickle, busy]:
            writer.close()
        await eventually(lambda: relay.connections == 0)
        assert relay._tracker.pipes._sweeper is None  # no pipe, no timer


# ============================================================================ load
@pytest.mark.timeout(60)
async def test_200_concurrent_connections_arrive_intact(loop_kind: str) -> None:
    async with tunnel(max_source_connections=1000, max_connections=1000) as (relay, agent, port, _):

        async def one(i: int) -> None:
            payload = os.urandom(1000 + 997 * i)
            reader, writer = await asyncio.open_connection(HOST, port)

            async def send() -> None:
                writer.write(payload)
                await writer.drain()
                writer.write_eof()

            sender = asyncio.ensure_future(send())
            got = await asyncio.wait_for(reader.read(-1), 30)
            await sender
            writer.close()
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()

        await asyncio.gather(*(one(i) for i in range(200)))
        await eventually(lambda: relay.connections == 0 and len(agent._tracker) == 0)
        assert relay.counts["connections_total"] == 200
        assert (
            relay.counts["bytes_in"]
            == relay.counts["bytes_out"]
            == sum(1000 + 997 * i for i in range(200))
        )


# ============================================================================ forwarder
@contextlib.asynccontextmanager
async def forwarder(relay: Relay) -> AsyncIterator[tuple[Forwarder, int]]:
    link = LinkOptions(
        host=HOST, port=relay.port(), secret=KEY, role="forward", name="fwd", keepalive=None
    )
    fwd = Forwarder(ForwardOptions(link=link, host=HOST, port=0, service="svc"))
    await fwd.start()
    stop = asyncio.Event()
    task = asyncio.ensure_future(fwd.run(stop))
    try:
        await fwd.link.wait_ready(10)
        assert fwd._server is not None
        yield fwd, fwd._server.sockets[0].getsockname()[1]
    finally:
        stop.set()
        await task
        await fwd.shutdown(0)


async def test_the_relay_splices_forwarded_streams_with_flow_control_and_resets() -> None:
    """Forwarder -> relay -> agent: the relay's pipe joins two streams. A service that
    does not read holds the forward client back, the relay's buffers stay bounded, the
    data arrives intact, and a reset of the client reaches the service as a reset."""
    paused: list[Service] = []

    def stall(svc: Service) -> None:
        assert svc.transport is not None
        asyncio.get_running_loop().call_soon(svc.transport.pause_reading)
        paused.append(svc)

    async with tunnel(stall) as (relay, _agent, _, made), forwarder(relay) as (fwd, port):
        _reader, writer = await asyncio.open_connection(HOST, port)
        block = os.urandom(1024 * 1024)
        pusher = await push_until_held(writer, block, "the forward client")
        (splice,) = live_pipes(relay)
        assert isinstance(splice.a, StreamEnd)
        assert isinstance(splice.b, StreamEnd)
        held = splice.a.stream.buffered + splice.b.stream.write_pending
        assert held <= PROCESS_BOUND, held
        pusher.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await pusher
        (svc,) = paused
        assert svc.transport is not None
        svc.transport.resume_reading()
        await eventually(lambda: len(svc.received) >= 4 * len(block), 10)
        assert bytes(svc.received[: 4 * len(block)]) == block * 4
        rst(writer)
        exc = await asyncio.wait_for(svc.lost, 5)
        assert isinstance(exc, ConnectionResetError), exc
        await eventually(lambda: relay.connections == 0 and len(fwd._tracker) == 0)
        assert made == [svc]


async def test_stream_eof_first_then_service_eof_and_close_is_a_clean_end() -> None:
    """The order that ends most tunneled RPCs: the client's half-close reaches the service
    first (stream EOF -> TCP write_eof), then the service answers, half-closes and closes
    at once. The stream then finishes inside the pipe's own ``write_eof`` call: that is
    the graceful end of both directions, not "closed before both directions ended" (which
    reset the stream and cut the last bytes of the answer)."""
    results: list[Any] = []
    pipes = Pipes()

    async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()  # until the pipe's write_eof
        writer.write(request[::-1])
        writer.write_eof()
        writer.close()  # at once, as a one-shot service does

    service_server = await asyncio.start_server(service, HOST, 0)
    service_port = service_server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()

    async def handler(stream: Any) -> None:
        _, tcp = await loop.create_connection(lambda: TcpEnd(pipes), HOST, service_port)
        pipes.start(tcp, StreamEnd(stream), on_done=results.append)

    server = await mio.serve(handler, HOST, 0)
    client = await mio.connect(HOST, server.port)
    try:
        for i in range(20):  # the race needs the stream's EOF to come first: try often
            results.clear()
            stream = await client.open_stream()
            payload = os.urandom(64 * 1024 + i)
            stream.write(payload)
            stream.write_eof()
            answer = await asyncio.wait_for(stream.read(), 10)
            assert answer == payload[::-1]
            await eventually(lambda: len(results) == 1)
            assert results[0].error is None, results[0].error
    finally:
        client.close()
        server.close()
        await server.wait_closed()
        service_server.close()
        await service_server.wait_closed()


def test_links_grow_stream_windows_to_1_mib_on_both_ends() -> None:
    """docs/TUNNEL.md: relay and agent sessions use LINK_CONFIG (stream windows up to 1 MiB,
    twice Config's default), with or without keepalives."""
    assert LINK_CONFIG.max_window == 1024 * 1024 == 2 * mio.Config().max_window
    for keepalive in (None, 5.0):
        link = LinkOptions(
            host=HOST, port=1, secret=KEY, role="agent", name="a", keepalive=keepalive
        )
        relay = Relay(RelayOptions(host=HOST, port=0, publics=[], secret=KEY, keepalive=keepalive))
        for config in (link.session_config(), relay._config):
            assert config.max_window == LINK_CONFIG.max_window
            assert config.keepalive_interval == keepalive
