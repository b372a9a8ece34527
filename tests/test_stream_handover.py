"""Handing a stream to a ``mio.StreamProtocol`` mid-life (``Stream.set_protocol``) and the
callback form of ``drain()`` (``Stream.notify_drained``), over real loopback sockets: what
the tunnel's pipe is built on."""

from __future__ import annotations

import asyncio
from typing import Any

import mio


class Collect(mio.StreamProtocol):
    """Records what it is given; echoes with ``echo``."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.events: list[Any] = []
        self.stream: mio.Stream | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def stream_opened(self, stream: mio.Stream) -> None:
        self.stream = stream
        self.events.append("opened")

    def data_received(self, data: bytes) -> None:
        self.events.append(bytes(data))
        if self.echo and self.stream is not None:
            self.stream.write(data)

    def eof_received(self) -> None:
        self.events.append("eof")
        if self.echo and self.stream is not None:
            self.stream.close()

    def stream_closed(self, exc: BaseException | None) -> None:
        self.events.append(("closed", exc))
        if not self.closed.done():
            self.closed.set_result(exc)


async def test_a_handler_hands_its_stream_over_after_a_header_and_returns() -> None:
    protocols: list[Collect] = []
    handler_done = asyncio.Event()

    async def handler(stream: mio.Stream) -> None:
        assert await stream.readexactly(6) == b"HEADER"
        await asyncio.sleep(0.1)  # more arrives meanwhile: buffered, then delivered
        protocol = Collect(echo=True)
        protocols.append(protocol)
        stream.set_protocol(protocol)
        handler_done.set()  # returning does not close the stream: the protocol owns it

    server = await mio.serve(handler, "127.0.0.1", 0)
    client = await mio.connect("127.0.0.1", server.port)
    try:
        stream = await client.open_stream()
        stream.write(b"HEADERearly")
        await asyncio.wait_for(handler_done.wait(), 5)
        await asyncio.sleep(0.05)
        stream.write(b"late")
        assert await asyncio.wait_for(stream.readexactly(9), 5) == b"earlylate"
        stream.write_eof()
        assert await asyncio.wait_for(stream.read(), 5) == b""  # the protocol closed it
        (protocol,) = protocols
        assert await asyncio.wait_for(protocol.closed, 5) is None
        assert protocol.events == ["opened", b"early", b"late", "eof", ("closed", None)]
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def test_set_protocol_on_an_outbound_stream_with_data_and_eof_held() -> None:
    async def handler(stream: mio.Stream) -> None:
        await stream.send(b"greeting")
        stream.write_eof()
        await stream.read()

    server = await mio.serve(handler, "127.0.0.1", 0)
    client = await mio.connect("127.0.0.1", server.port)
    try:
        stream = await client.open_stream()
        stream.write(b"x")
        for _ in range(500):
            if stream.at_eof() or stream.buffered == 8:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        protocol = Collect()
        stream.set_protocol(protocol)  # delivers what is held, then the EOF, at once
        assert protocol.events == ["opened", b"greeting", "eof"]
        stream.close()
        assert await asyncio.wait_for(protocol.closed, 5) is None
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def test_set_protocol_on_a_reset_stream_reports_it_closed_at_once() -> None:
    async def handler(stream: mio.Stream) -> None:
        stream.reset(mio.ErrorCode.INTERNAL_ERROR)

    server = await mio.serve(handler, "127.0.0.1", 0)
    client = await mio.connect("127.0.0.1", server.port)
    try:
        stream = await client.open_stream()
        stream.write(b"x")
        for _ in range(500):
            if stream.is_closing():
                break
            await asyncio.sleep(0.01)
        protocol = Collect()
        stream.set_protocol(protocol)
        assert protocol.events[0] == "opened"
        assert isinstance(protocol.events[-1][1], mio.StreamResetError)
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def test_notify_drained_calls_back_once_the_peer_takes_the_data() -> None:
    window = 65536
    config = mio.Config(initial_window=window, max_window=window)
    release = asyncio.Event()

    async def slow_reader(stream: mio.Stream) -> None:
        await release.wait()
        while await stream.read(65536):
            pass

    server = await mio.serve(slow_reader, "127.0.0.1", 0, config=config)
    client = await mio.connect("127.0.0.1", server.port, config=config)
    try:
        stream = await client.open_stream()
        calls: list[int] = []
        assert not stream.notify_drained(lambda: calls.append(1))  # nothing queued
        stream.write(b"d" * (4 * window))  # more than the peer's window
        assert stream.write_pending > 0
        assert stream.notify_drained(lambda: calls.append(stream.write_pending))
        await asyncio.sleep(0.1)
        assert calls == []  # the peer does not read: no callback
        release.set()
        for _ in range(500):
            if calls:
                break
            await asyncio.sleep(0.01)
        assert calls == [0]  # once, when everything was sent
        assert not stream.notify_drained(lambda: calls.append(2))
        stream.close()
    finally:
        client.close()
        server.close()
        await server.wait_closed()


class Forwarder(mio.StreamProtocol):
    """Writes what it receives into ``other`` (a proxy), never paused by its backlog."""

    pause_on_backlog = False

    def __init__(self, other: mio.Stream) -> None:
        self.other = other
        self.received = 0

    def data_received(self, data: bytes) -> None:
        self.received += len(data)


async def test_pause_on_backlog_false_keeps_delivering_while_writes_are_unsent() -> None:
    window = 65536
    config = mio.Config(initial_window=window, max_window=window)
    got: list[int] = []

    async def no_reader_then_sender(stream: mio.Stream) -> None:
        # Never reads: what the client writes stays unsent, beyond a window.
        for _ in range(16):
            await stream.send(b"s" * window)
        got.append(1)
        await asyncio.sleep(10)

    for backlog_pauses in (True, False):
        server = await mio.serve(no_reader_then_sender, "127.0.0.1", 0, config=config)
        client = await mio.connect("127.0.0.1", server.port, config=config)
        try:
            stream = await client.open_stream()
            protocol = Forwarder(stream)
            protocol.pause_on_backlog = backlog_pauses
            stream.set_protocol(protocol)
            stream.write(b"w" * (4 * window))  # unsent: the server does not read
            for _ in range(300 if not backlog_pauses else 50):
                if protocol.received >= 16 * window:
                    break
                await asyncio.sleep(0.01)
            if backlog_pauses:  # input held back behind the unsent writes
                assert protocol.received <= 2 * window
            else:
                assert protocol.received == 16 * window
        finally:
            client.close()
            server.close()
            await server.wait_closed()
