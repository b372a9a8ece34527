"""A mio session over a WebSocket connection of the ``websockets`` library (asyncio API).

:class:`WebSocketTransport` is an :class:`asyncio.Transport` over an open
``websockets.asyncio`` connection (client or server side): the session's byte stream goes
out as binary messages (at most :data:`MAX_MESSAGE` octets each, larger writes are split
without copying) and every binary message received is fed to the session as it comes.
Message boundaries mean nothing: the MIO frames inside are a byte stream.

* **Flow control.** Writes queue in the transport (a reference, no copy: the session never
  touches a buffer it handed over) and one task sends them with ``connection.send()``, which
  waits while websockets' own write buffer is over its limit. The session is told
  ``pause_writing()`` when the queue passes the high-water mark (``set_write_buffer_limits``)
  and ``resume_writing()`` once it is down to the low one (``send()`` blocking while the
  socket is full is what makes the queue grow). On the way in,
  ``pause_reading()`` stops taking messages; websockets then queues at most
  :data:`MAX_QUEUE` messages and stops reading the socket, so TCP pushes back.
* **Close.** ``close()`` sends what is queued, then the WebSocket close frame (code 1000);
  ``abort()`` drops the connection. A close frame from the peer (1000/1001) is an EOF for
  the session; anything else (an abnormal closure, a text message, an oversized message)
  is a lost connection with a :class:`ConnectionResetError` saying what happened. The
  session's ``connection_lost`` comes once, after both directions have stopped.

Needs ``websockets`` >= 15: ``pip install 'mio-mux[ws]'``.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

try:
    from websockets.asyncio.connection import Connection
    from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
    from websockets.frames import CloseCode
except ImportError as _exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "mio's WebSocket links need websockets >= 17, an optional dependency: "
        f"pip install 'mio-mux[ws]' ({_exc})"
    ) from _exc

__all__ = ("MAX_MESSAGE", "MAX_QUEUE", "WRITE_LIMIT", "WebSocketTransport", "attach")

#: Largest binary message sent; the receiving side refuses larger ones (``max_size``).
MAX_MESSAGE = 256 * 1024
#: Messages websockets queues (high, low) while the session does not read.
MAX_QUEUE = (4, 2)
#: websockets' own write buffer limit (high): ``send()`` waits above it.
WRITE_LIMIT = 256 * 1024

_Data = bytes | bytearray | memoryview


class WebSocketTransport(asyncio.Transport):
    """See the module docstring. Made by :func:`attach`."""

    def __init__(self, connection: Connection, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self._ws = connection
        self._protocol: Any = protocol
        self._loop = asyncio.get_running_loop()
        self._queue: collections.deque[_Data] = collections.deque()
        self._queued = 0
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._write_paused = False
        self._reading = asyncio.Event()
        self._reading.set()
        self._more = asyncio.Event()
        self._closing = False
        self._aborted = False
        self._error: Exception | None = None
        self._eof = False
        self._drop_input = False  # closed here, or broken: what was not read is lost
        self._task: asyncio.Task[None] | None = None

    def _start(self) -> None:
        self._task = self._loop.create_task(self._run())

    # ------------------------------------------------------------------ asyncio.Transport
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "websocket":
            return self._ws
        return self._ws.transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = self._drop_input = True
            self._more.set()
            # Read on: the peer's close frame may wait behind messages nobody will read.
            self._reading.set()

    def abort(self) -> None:
        self._closing = self._aborted = self._drop_input = True
        self._queue.clear()
        self._queued = 0
        self._more.set()
        self._ws.transport.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[no-any-return]

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    def is_reading(self) -> bool:
        return self._reading.is_set()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not 0 <= low <= high:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._check_pause()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def get_write_buffer_size(self) -> int:
        return self._queued + self._ws.transport.get_write_buffer_size()

    def can_write_eof(self) -> bool:
        return False  # a WebSocket has no half-close; the session sends FIN and closes

    def write_eof(self) -> None:
        raise NotImplementedError("a WebSocket connection cannot be half-closed")

    def write(self, data: _Data) -> None:
        if self._closing or not data:
            return
        self._queue.append(data)
        self._queued += len(data)
        self._more.set()
        self._check_pause()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    # ------------------------------------------------------------------ internals
    def _check_pause(self) -> None:
        if not self._write_paused and self._queued > self._high:
            self._write_paused = True
            self._protocol.pause_writing()

    def _check_resume(self) -> None:
        if self._write_paused and self._queued <= self._low:
            self._write_paused = False
            self._protocol.resume_writing()

    def _lost(self, exc: ConnectionClosed) -> None:
        if self._error is None and not self._aborted:
            self._error = ConnectionResetError(f"WebSocket connection closed: {exc}")

    async def _run(self) -> None:
        """Both directions; ``connection_lost`` once the connection is closed."""
        ws = self._ws
        reader = self._loop.create_task(self._read_loop())
        try:
            await self._write_loop()  # until close(), abort(), the reader's end or a failure
            if not self._aborted:
                try:
                    await ws.close()  # the closing handshake (code 1000), bounded by its timeout
                except ConnectionClosed as exc:
                    self._lost(exc)
            await ws.wait_closed()
            if not reader.done() and self._drop_input:
                reader.cancel()  # paused, input nobody will read
            # Else the peer closed cleanly while the reader is paused: what it sent before
            # its close frame (and then the EOF) is delivered once the session reads again.
            await asyncio.gather(reader, return_exceptions=True)
            if not reader.cancelled() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
        except Exception as exc:  # a bug in a callback: end the connection, say why
            if self._error is None:
                self._error = exc
            ws.transport.abort()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await ws.wait_closed()
        finally:
            self._closing = True
            self._queue.clear()
            self._queued = 0
        protocol = self._protocol
        if self._eof and self._error is None:
            protocol.eof_received()
        self._write_paused = False
        protocol.connection_lost(self._error)

    async def _read_loop(self) -> None:
        ws = self._ws
        try:
            while True:
                if not self._reading.is_set():
                    await self._reading.wait()
                data = await ws.recv()
                if not self._reading.is_set():  # paused while this message was awaited
                    await self._reading.wait()
                if isinstance(data, str):
                    self._error = ConnectionResetError(
                        "the peer sent a text message: a mio link carries binary messages only"
                    )
                    await ws.close(CloseCode.UNSUPPORTED_DATA, "binary messages only")
                    return
                self._protocol.data_received(data)
        except ConnectionClosedOK:
            if not self._closing:
                self._eof = True
        except ConnectionClosed as exc:
            self._lost(exc)
        finally:
            # The other direction stops too: nothing more can be said on this connection.
            self._closing = True
            self._more.set()

    async def _write_loop(self) -> None:
        ws = self._ws
        queue = self._queue
        try:
            while True:
                while queue:
                    data = queue.popleft()
                    n = len(data)
                    if n <= MAX_MESSAGE:
                        await ws.send(data)
                    else:
                        view = memoryview(data)
                        for i in range(0, n, MAX_MESSAGE):
                            await ws.send(view[i : i + MAX_MESSAGE])
                    self._queued -= n
                    self._check_resume()
                if self._closing:
                    return
                self._more.clear()
                await self._more.wait()
        except ConnectionClosedOK:
            self._closing = True  # the peer closed: the reader delivers the rest and the EOF
        except ConnectionClosed as exc:
            self._lost(exc)
            self._closing = self._drop_input = True


def attach(connection: Connection, protocol: asyncio.BaseProtocol) -> WebSocketTransport:
    """Run ``protocol`` (a :class:`mio.Session`) over the open WebSocket ``connection``:
    ``protocol.connection_made`` is called now, the first message is read on the next
    loop turn."""
    transport = WebSocketTransport(connection, protocol)
    protocol.connection_made(transport)
    transport._start()
    return transport
