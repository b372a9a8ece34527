"""Helpers of the session-layer behaviour tests: echo servers, a scripted raw-frame peer, polling.

Not a test module. The raw peer speaks MIO with ``struct`` over asyncio streams, so what
mio puts on the wire is observed exactly (one :class:`Frame` per frame, payload included).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, NamedTuple

import mio
from mio.wire import FrameKind

OPEN = FrameKind.OPEN
DATA = FrameKind.DATA
DATA_HFR = FrameKind.DATA_HFR
WINDOW_UPDATE = FrameKind.WINDOW_UPDATE
RST = FrameKind.RST
SESSION_WINDOW_UPDATE = FrameKind.SESSION_WINDOW_UPDATE
FIN = FrameKind.FIN

REFERENCE_WINDOW = 0xFFFFFF
REFERENCE_MAX_FRAME = 128
HOST = "127.0.0.1"


async def echo(stream: mio.Stream) -> None:
    """Stream handler: send back everything, until the peer half-closes."""
    async for chunk in stream:
        stream.write(chunk)
        await stream.drain()


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (polling) until ``predicate()`` is true; TimeoutError after ``timeout``."""

    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 - polls state no event announces
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


def pending_tasks() -> set[asyncio.Task[Any]]:
    """Tasks of the running loop that are not done, without the current one."""
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if not t.done() and t is not current}


async def no_new_tasks(before: set[asyncio.Task[Any]], timeout: float = 5.0) -> None:
    """Wait until every task started since ``before`` was taken has finished."""
    me = asyncio.current_task()
    await eventually(lambda: not (pending_tasks() - before - {me}), timeout)


class Accepted:
    """A ``session_handler`` that hands every server-side session to the test."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[mio.Session] = asyncio.Queue()

    async def __call__(self, session: mio.Session) -> None:
        await self.queue.put(session)

    async def get(self) -> mio.Session:
        return await asyncio.wait_for(self.queue.get(), 10)


@contextlib.asynccontextmanager
async def mio_pair(
    handler: mio.session.StreamHandler | None = echo,
    *,
    config: mio.Config | None = None,
    client_config: mio.Config | None = None,
    client_handler: mio.session.StreamHandler | None = None,
) -> AsyncIterator[tuple[mio.Session, mio.Session]]:
    """A real loopback TCP connection: ``(client session, server session)``."""
    accepted = Accepted()
    server = await mio.serve(handler, HOST, 0, config=config, session_handler=accepted)
    try:
        client = await mio.connect(
            HOST,
            server.port,
            config=client_config if client_config is not None else config,
            handler=client_handler,
        )
        try:
            yield client, await accepted.get()
        finally:
            client.close()
            await client.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def codec_pair(
    impl: Any, handler: mio.session.StreamHandler | None = echo, config: mio.Config | None = None
) -> AsyncIterator[tuple[mio.Session, mio.Session]]:
    """Like :func:`mio_pair`, both sessions on the codec implementation ``impl``."""
    loop = asyncio.get_running_loop()
    made: asyncio.Queue[mio.Session] = asyncio.Queue()

    def factory() -> mio.Session:
        session = mio.Session(client=False, config=config, handler=handler, _codec=impl)
        made.put_nowait(session)
        return session

    server = await loop.create_server(factory, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, client = await loop.create_connection(
            lambda: mio.Session(client=True, config=config, _codec=impl), HOST, port
        )
        server_session = await asyncio.wait_for(made.get(), 10)
        try:
            yield client, server_session
        finally:
            client.close()
            await client.wait_closed()
            server_session.close()
            await server_session.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


async def roundtrip(stream: mio.Stream, payload: bytes) -> bytes:
    """Write ``payload`` and half-close while reading everything back (concurrently: an echo
    peer cannot take more than a window before this side reads)."""

    async def send() -> None:
        stream.write(payload)
        stream.write_eof()
        await stream.drain()

    _, data = await asyncio.gather(send(), stream.read())
    return data


# --------------------------------------------------------------------------------------------
# Raw frames.


class Frame(NamedTuple):
    sid: int
    value: int
    kind: int
    payload: bytes = b""


def frame_bytes(sid: int, value: int, kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">II", sid, value << 8 | kind) + payload


class RawPeer:
    """A peer scripted frame by frame (asyncio streams + struct).

    Every frame read is appended to :attr:`received`; :meth:`read_frame` returns ``None``
    at a clean end of the byte stream.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received: list[Frame] = []

    @classmethod
    async def connect(cls, port: int, *, rcvbuf: int | None = None) -> RawPeer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    # ---------------------------------------------------------------- sending
    def send(self, sid: int, value: int, kind: int, payload: bytes = b"") -> None:
        self.writer.write(frame_bytes(sid, value, kind, payload))

    def open(self, sid: int, window: int = REFERENCE_WINDOW) -> None:
        self.send(sid, window, OPEN)

    def data(
        self, sid: int, payload: bytes, *, hfr: bool = False, max_frame: int = REFERENCE_MAX_FRAME
    ) -> None:
        """DATA frames of at most ``max_frame`` bytes; with ``hfr`` the last one ends the side."""
        chunks = [payload[i : i + max_frame] for i in range(0, len(payload), max_frame)] or [b""]
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            self.send(sid, len(chunk), DATA_HFR if hfr and last else DATA, chunk)

    def window_update(self, sid: int, increment: int) -> None:
        self.send(sid, increment, WINDOW_UPDATE)

    def rst(self, sid: int, code: int = 0) -> None:
        self.send(sid, code, RST)

    def fin(self, code: int = 0) -> None:
        self.send(0, code, FIN)

    async def drain(self) -> None:
        await self.writer.drain()

    # ---------------------------------------------------------------- receiving
    async def read_frame(self) -> Frame | None:
        try:
            header = await self.reader.readexactly(8)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return None
        sid, word = struct.unpack(">II", header)
        value = word >> 8
        kind = word & 0x1F
        payload = b""
        if kind in (DATA, DATA_HFR) and value:
            payload = await self.reader.readexactly(value)
        frame = Frame(sid & 0x7FFFFFFF, value, kind, payload)
        self.received.append(frame)
        return frame

    async def expect(self, kinds: Iterable[int], sid: int | None = None) -> Frame:
        """Read frames until one of ``kinds`` (on stream ``sid`` if given) arrives."""
        kinds = frozenset(kinds)
        while True:
            frame = await asyncio.wait_for(self.read_frame(), 10)
            if frame is None:
                raise EOFError(f"connection ended while waiting for {kinds}")
            if frame.kind in kinds and (sid is None or frame.sid == sid):
                return frame

    async def read_stream(self, sid: int, *, ack: bool = True) -> bytes:
        """Collect stream ``sid``'s data up to its half-close; with ``ack`` acknowledge each
        DATA frame with one WINDOW UPDATE for exactly its length, like the reference."""
        parts = []
        while True:
            frame = await self.expect((DATA, DATA_HFR, RST), sid)
            if frame.kind == RST:
                raise ConnectionResetError(f"stream {sid} reset with code {frame.value}")
            parts.append(frame.payload)
            if ack and frame.payload:
                self.window_update(sid, len(frame.payload))
            if frame.kind == DATA_HFR:
                return b"".join(parts)

    async def read_to_eof(self, *, reset_ok: bool = False) -> None:
        """Read (and record) frames until the connection ends.

        With ``reset_ok`` a TCP RST also ends it: mio closes its socket right after sending
        FIN, so bytes this peer sent that mio never read make the kernel answer with RST.
        """
        try:
            while await asyncio.wait_for(self.read_frame(), 10) is not None:
                pass
        except ConnectionResetError:
            if not reset_ok:
                raise

    def frames(self, *kinds: int) -> list[Frame]:
        return [f for f in self.received if f.kind in kinds]

    # ---------------------------------------------------------------- ending
    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    def kill(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0)."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


@contextlib.asynccontextmanager
async def raw_server() -> AsyncIterator[tuple[int, asyncio.Queue[RawPeer]]]:
    """A listener whose connections become :class:`RawPeer` objects: ``(port, queue)``."""
    peers: asyncio.Queue[RawPeer] = asyncio.Queue()
    made: list[RawPeer] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = RawPeer(reader, writer)
        made.append(peer)
        await peers.put(peer)

    server = await asyncio.start_server(on_connect, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1], peers
    finally:
        for peer in made:
            if not peer.writer.is_closing():
                await peer.close()
        server.close()
        await server.wait_closed()
