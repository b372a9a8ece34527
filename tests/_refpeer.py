"""A model of the reference (Go) MIO implementation at its own defaults, over raw sockets.

Not a test module (leading underscore): imported by ``test_reference_defaults.py``. Where
``session_util.RawPeer`` and ``_rawpeer.RawPeer`` are scripted frame by frame, this is a
small session implementation that behaves like the reference does when nobody configures
it (``/work/shared/reference/MIO-WIRE.md``, sections 2-4):

* OPEN (0x0C) carries window 0xFFFFFF on every stream it opens; as opener it assumes its
  send window is the window it advertised, as acceptor it takes the OPEN value as its send
  window (the OPEN value is the initial window of both directions).
* Stream ids come from one counter adding 2 from 0 (2, 4, 6 ... in both roles); accepting
  a stream overwrites the counter with the accepted id.
* DATA frames carry at most 1024 bytes (its frame size limit). Received DATA with a payload
  over 128 bytes (its "read buffer limit") is answered with RST FLOW_CONTROL_ERROR.
* Half-close is a separate empty DATA+HFR frame after the data; one stream WINDOW UPDATE
  per application read, for exactly the bytes read; session WINDOW UPDATEs (keepalives
  included) are ignored; received frames are classified in the reference's order (SYN,
  then RST, then WND, then FIN).
* ``RefStream.close()`` (its ``Close()``) sends RST NO_ERROR and forgets the stream at
  once; ``RefSession.close()`` sends FIN and leaves the transport open.
* A stream frame for an id it does not know is answered with RST CLOSED.
* Accept queue of 32 streams; an OPEN that cannot be queued within ``accept_timeout`` is
  answered with RST REFUSED (the reference's 1 ms; ``None``, the default here, waits for
  room instead: see ``accept_timeout`` below).
* A send queue of 128 frames in front of the transport.

What would hang, desynchronise or corrupt the real reference is recorded in
:attr:`Ledger.fatal`, and the model then stops processing input, as the deadlocked real
session would: any RST for a stream it knows (any code, NO_ERROR included), a FIN or a
transport EOF/error while streams it has not ``Close()``-d are in its table, DATA
with a payload for an id it does not know (it would parse the payload as headers), DATA
over 128 bytes, DATA beyond the receive window it granted, an OPEN for an id it already
has. Frames that are legal but not what a conforming mio peer sends (non-canonical flags,
reserved bits, DATA after a half-close ...) go to :attr:`Ledger.anomalies`. Tests assert
both lists are empty.

Its ``Decr`` bug is modelled as the reference behaves, not as a violation: a write whose
frame is larger than the send window left sends an empty DATA frame, loses that window
and waits for the next WINDOW UPDATE (:attr:`Ledger.decr_losses`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from mio.wire import HEADER_SIZE, MAX_STREAM_ID, ErrorCode, Flag, FrameKind

__all__ = (
    "ACCEPT_BACKLOG",
    "ACCEPT_TIMEOUT",
    "FRAME_SIZE",
    "READ_LIMIT",
    "READ_SIZE",
    "SEND_QUEUE",
    "WINDOW",
    "Ledger",
    "RefServer",
    "RefSession",
    "RefSessionClosed",
    "RefStream",
    "frame",
    "ref_client",
    "ref_echo",
    "run_bounded",
)

T = TypeVar("T")

#: The reference's defaults.
WINDOW = 0xFFFFFF
FRAME_SIZE = 1024
READ_LIMIT = 128
ACCEPT_BACKLOG = 32
ACCEPT_TIMEOUT = 0.001
SEND_QUEUE = 128
#: Buffer of one application read: 32 KiB, the buffer of Go's ``io.Copy``.
READ_SIZE = 32 * 1024
HOST = "127.0.0.1"

_SYN, _FIN, _RST, _WND, _HFR = Flag.SYN, Flag.FIN, Flag.RST, Flag.WND, Flag.HFR
_OPEN, _DATA, _DATA_HFR = int(FrameKind.OPEN), int(FrameKind.DATA), int(FrameKind.DATA_HFR)
_WINDOW_UPDATE, _RST_KIND = int(FrameKind.WINDOW_UPDATE), int(FrameKind.RST)
_FIN_KIND = int(FrameKind.FIN)
_CANONICAL = frozenset(int(k) for k in FrameKind)
_SESSION_KINDS = frozenset((int(FrameKind.SESSION_WINDOW_UPDATE), _FIN_KIND))
_HDR = struct.Struct(">II")


def frame(sid: int, value: int, flags: int, payload: bytes = b"") -> bytes:
    """One frame as the reference encodes it (bit 31 and reserved flag bits zero)."""
    return _HDR.pack(sid, value << 8 | flags) + payload


class RefSessionClosed(ConnectionError):
    """The model session ended (or hung); raised by its blocking calls."""


class Ledger:
    """What a model peer saw: the violations that would break the real reference, and
    counters. One ledger is shared by every session of a :class:`RefServer`."""

    def __init__(self) -> None:
        self.fatal: list[str] = []
        self.anomalies: list[str] = []
        #: every RST received: (stream id, code, known stream?)
        self.resets_received: list[tuple[int, int, bool]] = []
        #: (stream id, flags) of the frames without payload (WINDOW UPDATE, empty DATA+HFR)
        #: received for a stream the model had already forgotten (``Close()``), each
        #: answered with RST CLOSED as the reference does. Harmless (no payload to skip)
        #: and unavoidable: a frame the peer sent before it saw the model's ``Close()``.
        self.late_frames: list[tuple[int, int]] = []
        #: ids answered with RST REFUSED (accept queue full)
        self.refused: list[int] = []
        #: (stream id, window) of every OPEN received
        self.opens_received: list[tuple[int, int]] = []
        self.handler_errors: list[BaseException] = []
        #: (stream id, credit lost) each time the reference's Decr bug struck: a write met
        #: a send window smaller than its frame, so an empty DATA frame went out instead
        #: and the rest of the window was lost. Not a fault of the peer (any receiver that
        #: lets the 0xFFFFFF window run low triggers it), but it shrinks the window for
        #: good: against a receiver that announces at half the window (mio), a transfer
        #: stalls once half the window is lost this way.
        self.decr_losses: list[tuple[int, int]] = []
        self.frames_received: collections.Counter[int] = collections.Counter()
        self.data_bytes_received = 0
        self.max_payload_received = 0
        self.window_updates_sent = 0
        self.reads = 0
        self.fins_received: list[int] = []
        self.hung = asyncio.Event()

    def record_fatal(self, what: str) -> None:
        if len(self.fatal) < 50:
            self.fatal.append(what)
        self.hung.set()

    def record_anomaly(self, what: str) -> None:
        if len(self.anomalies) < 50:
            self.anomalies.append(what)

    def summary(self) -> str:
        kinds = {f"0x{k:02x}": n for k, n in sorted(self.frames_received.items())}
        return (
            f"fatal={self.fatal[:10]} anomalies={self.anomalies[:10]} "
            f"resets_received={self.resets_received[:10]} "
            f"late_frames={self.late_frames[:10]} refused={self.refused[:10]} "
            f"handler_errors={self.handler_errors[:5]!r} decr_losses={self.decr_losses[:5]} "
            f"frames_received={kinds} "
            f"fins_received={self.fins_received}"
        )

    def check(self, *, refused_ok: bool = False) -> None:
        """Fail unless the peer did nothing that would break the real reference and sent
        no RST at all (late frames are allowed; refusals with ``refused_ok``)."""
        problems = bool(
            self.fatal
            or self.anomalies
            or self.resets_received
            or self.handler_errors
            or (self.refused and not refused_ok)
        )
        if problems:
            raise AssertionError(f"reference model: {self.summary()}")


class RefStream:
    """One stream of a :class:`RefSession`, with the reference's ``net.Conn`` behaviour."""

    def __init__(self, session: RefSession, sid: int, window: int) -> None:
        self.id = sid
        self._session = session
        self.send_window = window  # what the model may still send
        self.granted = window  # what it allowed the peer to send, in total
        self.received = 0  # what the peer sent, in total
        self._buf = bytearray()
        self._eof = False  # DATA+HFR received
        self._write_closed = False  # DATA+HFR sent
        self.forgotten = False  # Close()d, refused, or the session ended
        self._waiter: asyncio.Future[None] | None = None
        self._window_waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return (
            f"<RefStream {self.id} send_window={self.send_window} buffered={len(self._buf)} "
            f"eof={self._eof} write_closed={self._write_closed} forgotten={self.forgotten}>"
        )

    # ---------------------------------------------------------------- from the session
    def _feed(self, payload: bytes, last: bool) -> None:
        n = len(payload)
        if self._eof:
            self._session.ledger.record_anomaly(f"stream {self.id}: DATA after DATA+HFR")
        self.received += n
        if self.received > self.granted:
            self._session._fatal(
                f"stream {self.id}: DATA beyond the granted window "
                f"({self.received} bytes received, {self.granted} granted)"
            )
            return
        if n:
            self._buf += payload
        if last:
            self._eof = True
        self._wake()

    def _on_window_update(self, increment: int) -> None:
        self.send_window += increment
        fut = self._window_waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _wake(self) -> None:
        fut = self._waiter
        if fut is not None and not fut.done():
            fut.set_result(None)
        fut = self._window_waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _check_alive(self) -> None:
        if self.forgotten or self._session.hung:
            raise RefSessionClosed(f"stream {self.id} is gone ({self._session.why})")

    # ---------------------------------------------------------------- application API
    async def read(self, n: int = READ_SIZE) -> bytes:
        """``Read(buf)`` with ``len(buf) == n``: what is buffered, up to ``n`` bytes; ``b""``
        at end of stream. Sends exactly one WINDOW UPDATE, for exactly the bytes read."""
        while not self._buf and not self._eof:
            self._check_alive()
            fut = self._waiter = self._session._loop.create_future()
            await fut
        self._check_alive()
        if not self._buf:
            return b""
        if len(self._buf) <= n:
            data = bytes(self._buf)
            self._buf.clear()
        else:
            data = bytes(self._buf[:n])
            del self._buf[:n]
        session = self._session
        session.ledger.reads += 1
        session.ledger.window_updates_sent += 1
        self.granted += len(data)
        await session._send(frame(self.id, len(data), _WINDOW_UPDATE))
        return data

    async def read_exactly(self, n: int) -> bytes:
        """``io.ReadFull``: reads of the bytes still missing until ``n`` arrived."""
        parts = []
        got = 0
        while got < n:
            data = await self.read(n - got)
            if not data:
                raise EOFError(f"stream {self.id}: EOF after {got} of {n} bytes")
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    async def read_to_eof(self, n: int = READ_SIZE) -> bytes:
        """``io.ReadAll`` with ``n``-byte reads."""
        parts = []
        while data := await self.read(n):
            parts.append(data)
        return b"".join(parts)

    async def write(self, data: bytes) -> None:
        """``Write(data)``: DATA frames of at most 1024 bytes, each within the send window."""
        session = self._session
        view = memoryview(data)
        for start in range(0, len(view), FRAME_SIZE):
            chunk = view[start : start + FRAME_SIZE]
            size = len(chunk)
            while True:
                while self.send_window <= 0:
                    self._check_alive()
                    fut = self._window_waiter = session._loop.create_future()
                    await fut
                self._check_alive()
                if self.send_window >= size:
                    break
                # The reference's Decr zeroes the window before reading it: a frame larger
                # than the window left goes out empty and that window is lost; the bytes
                # are sent once a WINDOW UPDATE comes (MIO-WIRE.md section 4).
                session.ledger.decr_losses.append((self.id, self.send_window))
                self.send_window = 0
                await session._send(frame(self.id, 0, _DATA))
            self.send_window -= size
            await session._send(frame(self.id, size, _DATA, bytes(chunk)))

    async def close_write(self) -> None:
        """Half-close: a separate, empty DATA+HFR frame after the data."""
        self._check_alive()
        self._write_closed = True
        await self._session._send(frame(self.id, 0, _DATA_HFR))

    async def close(self) -> None:
        """``Close()``: RST NO_ERROR, and the stream is forgotten at once."""
        session = self._session
        if self.forgotten:
            return
        session._forget(self)
        await session._send(frame(self.id, int(ErrorCode.NO_ERROR), _RST_KIND))


class RefSession:
    """One reference session over an asyncio stream pair, in either role.

    Args:
        ledger: where violations and counters go.
        accept_backlog: the accept queue (32 streams in the reference).
        accept_timeout: how long an OPEN waits for room in a full accept queue before it is
            answered with RST REFUSED. The reference waits 1 ms (:data:`ACCEPT_TIMEOUT`);
            the default ``None`` waits for room (its read loop blocks meanwhile), because
            whether a 1 ms wall-clock timer fires depends on the machine's load, and the
            resulting REFUSED followed by the opener's early DATA would desynchronise the
            real reference (a known bug of it, MIO-WIRE.md section 4), not test mio.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ledger: Ledger,
        *,
        name: str = "reference",
        accept_backlog: int = ACCEPT_BACKLOG,
        accept_timeout: float | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader = reader
        self._writer = writer
        self.ledger = ledger
        self.name = name
        self.streams: dict[int, RefStream] = {}
        self.next_id = 0
        self._backlog = accept_backlog
        self._accept_timeout = accept_timeout
        self._accept_queue: collections.deque[RefStream] = collections.deque()
        self._accept_waiter: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._sendq: asyncio.Queue[bytes | None] = asyncio.Queue(SEND_QUEUE)
        self.hung = False
        self.ended = False  # FIN or EOF received (or sent FIN and got EOF)
        self.fin_sent = False
        self.why = "open"
        self._ended = asyncio.Event()
        self._read_task: asyncio.Task[None] | None = None
        self._write_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._read_task = self._loop.create_task(self._read_loop())
        self._write_task = self._loop.create_task(self._write_loop())

    def __repr__(self) -> str:
        return f"<RefSession {self.name} streams={len(self.streams)} {self.why}>"

    @property
    def stream_count(self) -> int:
        """Streams in the model's table (opened or accepted, not ``Close()``-d yet)."""
        return len(self.streams)

    # ---------------------------------------------------------------- application API
    async def open_stream(self) -> RefStream:
        """``OpenStream()``: the next id of the shared counter, OPEN with window 0xFFFFFF."""
        self._check_open()
        self.next_id += 2
        sid = self.next_id
        if sid in self.streams:
            # Not a violation of the peer: the reference's own id collision (section 4).
            raise AssertionError(f"{self.name}: the reference would reuse stream id {sid}")
        stream = RefStream(self, sid, WINDOW)
        self.streams[sid] = stream
        await self._send(frame(sid, WINDOW, _OPEN))
        return stream

    async def accept(self) -> RefStream:
        """``Accept()``: the next queued stream; :class:`RefSessionClosed` once it ended."""
        while not self._accept_queue:
            self._check_open()
            fut = self._accept_waiter = self._loop.create_future()
            await fut
        stream = self._accept_queue.popleft()
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)
        return stream

    async def close(self) -> None:
        """The session's ``Close()``: FIN NO_ERROR; the transport stays open."""
        self.fin_sent = True
        await self._send(frame(0, int(ErrorCode.NO_ERROR), _FIN_KIND))

    async def wait_ended(self) -> None:
        """Until the peer's FIN or EOF ended the session (or it hung: then raise)."""
        await self._ended.wait()
        if self.hung:
            raise RefSessionClosed(self.why)

    async def shutdown(self) -> None:
        """The application's ``conn.Close()``: flush what is queued, close the socket,
        and stop every task of the model (whatever state it is in)."""
        if self._write_task is not None and not self._write_task.done():
            with contextlib.suppress(asyncio.QueueFull):
                self._sendq.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._write_task), 5)
            except (TimeoutError, ConnectionError):
                pass
        for task in (self._read_task, self._write_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await task
        self._end("shut down")
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    # ---------------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self.hung or self.ended or self.fin_sent:
            raise RefSessionClosed(f"{self.name}: {self.why}")

    def _fatal(self, what: str) -> None:
        self.ledger.record_fatal(f"{self.name}: {what}")
        if not self.hung:
            self.hung = True
            self.why = f"hung: {what}"
            self._wake_all()

    def _end(self, why: str) -> None:
        if not self.ended:
            self.ended = True
            if not self.hung:
                self.why = why
        self._ended.set()
        self._wake_all()

    def _wake_all(self) -> None:
        for fut in (self._accept_waiter, self._room):
            if fut is not None and not fut.done():
                fut.set_result(None)
        for stream in list(self.streams.values()):
            stream._wake()

    def _forget(self, stream: RefStream) -> None:
        stream.forgotten = True
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]

    async def _send(self, data: bytes) -> None:
        if self._write_task is None or self._write_task.done():
            raise RefSessionClosed(f"{self.name}: transport closed")
        await self._sendq.put(data)

    async def _write_loop(self) -> None:
        queue = self._sendq
        writer = self._writer
        while True:
            data = await queue.get()
            if data is None:
                return
            parts = [data]
            stop = False
            while not queue.empty():
                more = queue.get_nowait()
                if more is None:
                    stop = True
                    break
                parts.append(more)
            writer.write(b"".join(parts))
            await writer.drain()
            if stop:
                return

    async def _read_loop(self) -> None:
        buf = bytearray()
        unpack = _HDR.unpack_from
        ledger = self.ledger
        counts = ledger.frames_received
        try:
            while not self.hung:
                try:
                    chunk = await self._reader.read(1 << 16)
                except ConnectionError as exc:
                    self._on_transport_end(f"transport error {exc!r}")
                    return
                if not chunk:
                    if buf:
                        ledger.record_anomaly(f"{self.name}: EOF inside a frame ({bytes(buf)!r})")
                    self._on_transport_end("transport EOF")
                    return
                buf += chunk
                pos = 0
                end = len(buf)
                while end - pos >= HEADER_SIZE and not self.hung and not self.ended:
                    word0, word1 = unpack(buf, pos)
                    value = word1 >> 8
                    flags = word1 & 0xFF
                    is_data = flags & _SYN and not flags & _WND
                    if is_data and value > READ_LIMIT:
                        # Checked on the header, before the payload is in: the answer does
                        # not depend on how the payload arrives.
                        pos += HEADER_SIZE
                        sid = word0 & MAX_STREAM_ID
                        counts[flags] += 1
                        self._fatal(
                            f"stream {sid}: DATA payload of {value} bytes, over the "
                            f"{READ_LIMIT}-byte read buffer limit (answered RST "
                            "FLOW_CONTROL_ERROR)"
                        )
                        await self._send(frame(sid, int(ErrorCode.FLOW_CONTROL_ERROR), _RST_KIND))
                        break
                    if is_data and end - pos - HEADER_SIZE < value:
                        break  # the payload is not all in yet
                    pos += HEADER_SIZE
                    payload = b""
                    if is_data and value:
                        payload = bytes(buf[pos : pos + value])
                        pos += value
                    counts[flags] += 1
                    await self._on_frame(word0, value, flags, payload)
                del buf[:pos]
                if self.ended:
                    return
        finally:
            if self.hung:
                self._ended.set()

    def _on_transport_end(self, why: str) -> None:
        if self.streams:
            self._fatal(
                f"{why} with {len(self.streams)} streams open "
                f"(ids {sorted(self.streams)[:10]}): the reference deadlocks"
            )
        self._end(why)

    async def _on_frame(self, word0: int, value: int, flags: int, payload: bytes) -> None:
        ledger = self.ledger
        sid = word0 & MAX_STREAM_ID
        if word0 >> 31:
            ledger.record_anomaly(f"{self.name}: reserved bit 31 set in stream id {sid}")
        if flags & 0xE0 or flags not in _CANONICAL:
            ledger.record_anomaly(f"{self.name}: non-canonical flags 0x{flags:02x} on {sid}")
        elif (flags in _SESSION_KINDS) != (sid == 0):
            ledger.record_anomaly(f"{self.name}: frame 0x{flags:02x} on stream {sid}")
        # The reference's classification order: SYN, then RST, then WND, then FIN.
        if flags & _SYN:
            stream = self.streams.get(sid)
            if flags & _WND:
                if stream is None:
                    ledger.late_frames.append((sid, flags))
                    await self._answer_closed(sid)
                else:
                    stream._on_window_update(value)
                return
            ledger.data_bytes_received += value
            if value > ledger.max_payload_received:
                ledger.max_payload_received = value
            if stream is None:
                await self._answer_closed(sid)
                if value:
                    self._fatal(
                        f"DATA ({value} bytes) for unknown stream {sid}: the reference answers "
                        "RST CLOSED and parses the payload as headers (desynchronised)"
                    )
                else:
                    ledger.late_frames.append((sid, flags))
                return
            if not value and not flags & _HFR:
                ledger.record_anomaly(f"stream {sid}: empty DATA frame without HFR")
            stream._feed(payload, bool(flags & _HFR))
        elif flags & _RST:
            if flags & _WND:
                await self._on_open(sid, value)
                return
            stream = self.streams.get(sid)
            ledger.resets_received.append((sid, value, stream is not None))
            if stream is not None:
                self._fatal(
                    f"RST (code {value}) for stream {sid} it knows: the reference deadlocks"
                )
        elif flags & _WND:
            pass  # session WINDOW UPDATE (keepalive included): parsed and ignored
        elif flags & _FIN:
            ledger.fins_received.append(value)
            if self.streams:
                self._fatal(
                    f"FIN (code {value}) with {len(self.streams)} streams open "
                    f"(ids {sorted(self.streams)[:10]}): the reference deadlocks"
                )
            self._end(f"FIN {value} received")
        else:
            ledger.record_anomaly(f"{self.name}: frame with flags 0x{flags:02x} not classified")

    async def _answer_closed(self, sid: int) -> None:
        await self._send(frame(sid, int(ErrorCode.CLOSED), _RST_KIND))

    async def _on_open(self, sid: int, window: int) -> None:
        self.ledger.opens_received.append((sid, window))
        if sid in self.streams:
            self._fatal(f"OPEN for stream {sid}, which it already has")
            return
        stream = RefStream(self, sid, window)
        self.streams[sid] = stream
        self.next_id = sid  # the acceptor overwrites its id counter
        while len(self._accept_queue) >= self._backlog:
            room = self._room = self._loop.create_future()
            try:
                await asyncio.wait_for(room, self._accept_timeout)
            except TimeoutError:
                self._forget(stream)
                self.ledger.refused.append(sid)
                await self._send(frame(sid, int(ErrorCode.REFUSED), _RST_KIND))
                return
            if self.hung or self.ended:
                return
        self._accept_queue.append(stream)
        fut = self._accept_waiter
        if fut is not None and not fut.done():
            fut.set_result(None)


# ------------------------------------------------------------------------ roles
async def ref_echo(stream: RefStream) -> None:
    """The reference's example echo handler: read until EOF, write back every read, then
    half-close and ``Close()``."""
    while data := await stream.read():
        await stream.write(data)
    await stream.close_write()
    await stream.close()


RefHandler = Callable[[RefStream], Awaitable[None]]


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, port)


@contextlib.asynccontextmanager
async def ref_client(
    port: int, ledger: Ledger | None = None, **session_kwargs: Any
) -> AsyncIterator[RefSession]:
    """A model CLIENT session dialed to ``127.0.0.1:port``, shut down on exit."""
    reader, writer = await _connect(port)
    session = RefSession(
        reader, writer, ledger if ledger is not None else Ledger(), name="client", **session_kwargs
    )
    session.start()
    try:
        yield session
    finally:
        await session.shutdown()


class RefServer:
    """A model SERVER listening on 127.0.0.1 (port 0): every connection is a session whose
    accept loop starts ``handler(stream)`` for every accepted stream (Go: ``go handle(s)``).

    With ``accepting=False`` the accept loops wait for :meth:`start_accepting` (a stalled
    application: the accept queue fills up).
    """

    def __init__(
        self, handler: RefHandler = ref_echo, *, accepting: bool = True, **session_kwargs: Any
    ) -> None:
        self.handler = handler
        self.ledger = Ledger()
        self.sessions: list[RefSession] = []
        self._session_kwargs = session_kwargs
        self._accepting = asyncio.Event()
        if accepting:
            self._accepting.set()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> RefServer:
        self._server = await asyncio.start_server(self._on_connection, HOST, 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def stream_count(self) -> int:
        return sum(s.stream_count for s in self.sessions)

    def start_accepting(self) -> None:
        self._accepting.set()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        name = f"server#{len(self.sessions)}"
        session = RefSession(reader, writer, self.ledger, name=name, **self._session_kwargs)
        self.sessions.append(session)
        session.start()
        self._spawn(self._accept_loop(session))

    async def _accept_loop(self, session: RefSession) -> None:
        try:
            await self._accepting.wait()
            while True:
                stream = await session.accept()
                self._spawn(self._handle(stream))
        except RefSessionClosed:
            pass
        # The application closes the connection once the session ended (FIN or EOF).
        with contextlib.suppress(RefSessionClosed):
            await session.wait_ended()
        await session.shutdown()

    async def _handle(self, stream: RefStream) -> None:
        try:
            await self.handler(stream)
        except RefSessionClosed:
            pass  # the session hung or ended: recorded in the ledger already
        except Exception as exc:
            self.ledger.handler_errors.append(exc)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in self.sessions:
            await session.shutdown()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


# ------------------------------------------------------------------------ running
async def run_bounded(
    workload: Awaitable[T], ledgers: Iterable[Ledger], timeout: float, what: str = "workload"
) -> T:
    """Run ``workload`` to its end within ``timeout`` seconds, failing (never hanging) when
    it times out or as soon as a model peer records a fatal violation."""
    ledgers = list(ledgers)
    task = asyncio.ensure_future(workload)
    watchers = [asyncio.ensure_future(ledger.hung.wait()) for ledger in ledgers]
    try:
        done, _ = await asyncio.wait(
            {task, *watchers}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    fatal = [f for ledger in ledgers for f in ledger.fatal]
    if task in done and not fatal:
        return task.result()
    task.cancel()
    results = await asyncio.gather(task, return_exceptions=True)
    if fatal:
        raise AssertionError(
            f"{what}: the real reference would hang or desynchronise: {fatal[:10]}"
            f" ({ledgers[0].summary()})"
        )
    raise AssertionError(
        f"{what}: not finished within {timeout} s ({results[0]!r}); "
        + "; ".join(ledger.summary() for ledger in ledgers)
    )
