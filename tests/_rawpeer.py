"""A raw MIO peer for hostile-peer tests: hand-made frames over a plain TCP socket.

Not a test module (leading underscore): imported by the hostile, fuzz and fault tests.
The peer writes whatever bytes it is told to and decodes what mio sends back with the
pure-Python decoder, keeping every frame in order so tests can assert on the exact answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import mio
from mio import _frame_py

OPEN, DATA, DATA_HFR, WND, RST, SWND, FIN = 0x0C, 0x01, 0x11, 0x09, 0x04, 0x08, 0x02

#: Generous bound for "this must happen": a timeout here is a hang, not a slow machine.
WAIT = 10.0


def h(sid: int, value: int, flags: int) -> bytes:
    """A raw 8-octet header; ``sid`` may carry bit 31 (reserved)."""
    return sid.to_bytes(4, "big") + value.to_bytes(3, "big") + bytes([flags])


def open_(sid: int, window: int = 1 << 20) -> bytes:
    return h(sid, window, OPEN)


def data(sid: int, payload: bytes, hfr: bool = False) -> bytes:
    return h(sid, len(payload), DATA_HFR if hfr else DATA) + payload


def wnd(sid: int, inc: int) -> bytes:
    return h(sid, inc, WND)


def rst(sid: int, code: int) -> bytes:
    return h(sid, code, RST)


def swnd(inc: int = 0) -> bytes:
    return h(0, inc, SWND)


def fin(code: int = 0) -> bytes:
    return h(0, code, FIN)


class Frame(tuple[Any, ...]):
    """("data", sid, payload, end) or (kind, sid, value); DATA pieces are joined per frame."""

    @property
    def kind(self) -> Any:
        return self[0]

    @property
    def sid(self) -> int:
        return int(self[1])


class RawPeer:
    """One raw TCP connection to a mio server; frames received are kept in ``frames``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.frames: list[Frame] = []
        self.eof = False
        self.error: BaseException | None = None
        self._pieces: list[bytes] = []
        self._changed = asyncio.Event()
        self._decoder = _frame_py.FrameDecoder(self._on_data, self._on_frame)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, port: int, *, read: bool = True, rcvbuf: int | None = None) -> RawPeer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        peer = cls(reader, writer)
        if read:
            peer.start_reading()
        return peer

    def start_reading(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._read_loop())

    # ---------------------------------------------------------------- inbound
    def _on_data(self, sid: int, payload: bytes, end: bool) -> None:
        self._pieces.append(payload)
        if self._decoder.in_frame:
            return
        self.frames.append(Frame(("data", sid, b"".join(self._pieces), end)))
        self._pieces = []

    def _on_frame(self, kind: int, sid: int, value: int) -> None:
        self.frames.append(Frame((kind, sid, value)))

    async def _read_loop(self) -> None:
        try:
            while True:
                chunk = await self.reader.read(1 << 16)
                if not chunk:
                    break
                self._decoder.feed(chunk)
                self._changed.set()
        except (ConnectionError, mio.FrameError) as exc:
            self.error = exc
        finally:
            self.eof = True
            self._changed.set()

    async def wait_for(
        self, pred: Callable[[list[Frame]], Any], timeout: float = WAIT, what: str = ""
    ) -> Any:
        """Wait until ``pred(frames)`` is truthy (or EOF); return its value."""

        async def poll() -> Any:
            while True:
                result = pred(self.frames)
                if result or self.eof:
                    return result
                self._changed.clear()
                await self._changed.wait()

        try:
            result = await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"timed out waiting for {what or pred}: {self.frames[-5:]}"
            ) from None
        if not result:
            raise AssertionError(f"EOF while waiting for {what or pred}; got {self.frames[-10:]}")
        return result

    async def wait_eof(self, timeout: float = WAIT) -> None:
        async def poll() -> None:
            while not self.eof:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(poll(), timeout)

    def received(self, sid: int) -> bytes:
        """Every DATA payload received on ``sid`` so far."""
        return b"".join(f[2] for f in self.frames if f[0] == "data" and f[1] == sid)

    def ended(self, sid: int) -> bool:
        return any(f[0] == "data" and f[1] == sid and f[3] for f in self.frames)

    def of_kind(self, kind: Any, sid: int | None = None) -> list[Frame]:
        return [f for f in self.frames if f[0] == kind and (sid is None or f[1] == sid)]

    # ---------------------------------------------------------------- outbound
    def send(self, raw: bytes) -> None:
        self.writer.write(raw)

    async def flush(self) -> None:
        await self.writer.drain()

    async def echo(self, sid: int, payload: bytes, *, open_first: bool = True) -> None:
        """Open ``sid`` (optionally), send ``payload`` and wait for the server's echo of it."""
        if open_first:
            self.send(open_(sid))
        self.send(data(sid, payload))
        await self.flush()
        await self.wait_for(
            lambda _f: self.received(sid).endswith(payload), what=f"echo on stream {sid}"
        )

    def abort(self) -> None:
        """Close with an RST (SO_LINGER 0): the peer 'dies'."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, (1).to_bytes(4, "little") + bytes(4)
                )
        self.writer.transport.abort()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def echo_handler(stream: mio.Stream) -> None:
    """Echo every byte back; half-close when the peer does."""
    async for chunk in stream:
        stream.write(chunk)
        await stream.drain()


@contextlib.asynccontextmanager
async def mio_server(
    handler: Any = echo_handler, config: mio.Config | None = None, **kwargs: Any
) -> AsyncIterator[mio.Server]:
    server = await mio.serve(handler, "127.0.0.1", 0, config=config, **kwargs)
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


async def only_session(server: mio.Server) -> mio.Session:
    """The server's one session (waits for the connection to be accepted)."""
    for _ in range(1000):
        if server.sessions:
            (session,) = server.sessions
            return session
        await asyncio.sleep(0.005)
    raise AssertionError("the server never accepted the connection")


def other_tasks(baseline: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Tasks alive now that were not in ``baseline`` (the current task excluded)."""
    return {t for t in asyncio.all_tasks() if t not in baseline and not t.done()} - {
        asyncio.current_task()
    }


async def settle_tasks(baseline: set[asyncio.Task[Any]], timeout: float = WAIT) -> None:
    """Wait until only the ``baseline`` tasks are left; fail with the leftovers otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while other_tasks(baseline):
        if loop.time() > deadline:
            raise AssertionError(f"tasks leaked: {other_tasks(baseline)}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def raw_peer(port: int, **kwargs: Any) -> AsyncIterator[RawPeer]:
    """A connected :class:`RawPeer`, closed on exit even when the test fails."""
    peer = await RawPeer.connect(port, **kwargs)
    try:
        yield peer
    finally:
        await peer.close()
