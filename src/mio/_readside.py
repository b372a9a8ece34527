"""The read side shared by every stream type: ``read``, ``readexactly``, ``readuntil``…

One implementation of the asyncio ``StreamReader`` vocabulary over a receive buffer, used
by :class:`mio.Stream` (MIO over any byte stream) and :class:`mio.quic.QuicStream`, so both
transports read identically. The stream class provides the buffer.
"""

from __future__ import annotations

import asyncio

__all__ = ("LINE_LIMIT", "ReadSide")

_READ_CHUNK = 64 * 1024
#: Default ``limit`` of :meth:`ReadSide.readuntil`/``readline`` (asyncio's default too).
LINE_LIMIT = 64 * 1024


class ReadSide:
    """Mixin: the reading API over a buffer the subclass owns.

    The subclass provides the attributes ``_eof`` (the peer's direction ended), ``_error``
    (raised once the buffer is drained, or None for a clean EOF), ``_waiter`` (the future
    of a waiting reader, or None), ``_loop`` and ``_id``, and the members below marked
    "provided by the stream". ``_wake()`` is called by the stream
    whenever data, EOF or an error arrives.
    """

    __slots__ = ()

    _eof: bool
    _error: BaseException | None
    _waiter: asyncio.Future[None] | None
    _loop: asyncio.AbstractEventLoop
    _id: int

    # -- provided by the stream
    @property
    def _size(self) -> int:
        """Buffered bytes (a slot or a property of the stream)."""
        raise NotImplementedError

    def _take(self, n: int) -> bytes:
        """Remove and return up to ``n`` buffered bytes (at least one is buffered)."""
        raise NotImplementedError

    def _find(self, separator: bytes, start: int) -> int:
        """Index of ``separator`` in the buffer at or after ``start``, or -1. Called with a
        growing ``start`` while a line arrives: it must cost time in the bytes after
        ``start`` only (amortized), so that a long line is read in linear time."""
        raise NotImplementedError

    def _read_limit(self) -> int:
        """The most the buffer can ever hold (the receive window)."""
        raise NotImplementedError

    def _before_wait(self, need: int) -> None:
        """A reader is about to wait for ``need`` more bytes (e.g. release held-back window)."""

    # -- the reading API
    def at_eof(self) -> bool:
        """True when the peer's direction has ended and every byte was read."""
        return self._eof and not self._size

    async def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes; ``n < 0`` reads until end of stream.

        Returns ``b""`` at end of stream. Raises :class:`StreamResetError` if the stream
        was reset, :class:`SessionClosedError` if the session died before the peer ended
        this direction.
        """
        if n < 0:
            parts: list[bytes] = []
            while True:
                while not self._size:
                    if self._eof:
                        if self._error is not None:
                            raise self._error
                        return parts[0] if len(parts) == 1 else b"".join(parts)
                    fut = self._wait()
                    try:
                        await fut
                    except GeneratorExit:  # closed, not cancelled: nobody waits on fut now
                        if self._waiter is fut:
                            self._waiter = None  # type: ignore[misc]  # a slot
                        raise
                parts.append(self._take(self._size))
        if n == 0:
            return b""
        while not self._size:
            if self._eof:
                if self._error is not None:
                    raise self._error
                return b""
            fut = self._wait()
            try:
                await fut
            except GeneratorExit:  # closed, not cancelled: nobody waits on fut now
                if self._waiter is fut:
                    self._waiter = None  # type: ignore[misc]  # a slot
                raise
        return self._take(n)

    async def readexactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes; :class:`asyncio.IncompleteReadError` if EOF comes first.

        Up to the receive window, a cancelled call loses nothing; a larger ``n`` is read
        piecewise (the peer needs window updates to send it all), and like ``read(-1)`` a
        call cancelled midway loses what it had taken.
        """
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        if n > self._read_limit():
            # The buffer can never hold n bytes: waiting for them all would deadlock.
            parts: list[bytes] = []
            got = 0
            while got < n:
                chunk = await self.read(n - got)
                if not chunk:
                    raise asyncio.IncompleteReadError(b"".join(parts), n)
                parts.append(chunk)
                got += len(chunk)
            return b"".join(parts)
        while self._size < n:
            if self._eof:
                if self._error is not None and not self._size:
                    raise self._error
                partial = self._take(self._size) if self._size else b""
                raise asyncio.IncompleteReadError(partial, n)
            fut = self._wait(n - self._size)
            try:
                await fut
            except GeneratorExit:  # closed, not cancelled: nobody waits on fut now
                if self._waiter is fut:
                    self._waiter = None  # type: ignore[misc]  # a slot
                raise
        return self._take(n) if n else b""

    async def readuntil(self, separator: bytes = b"\n", *, limit: int = LINE_LIMIT) -> bytes:
        """Read up to and including ``separator``, as ``asyncio.StreamReader.readuntil``.

        Each wake-up scans only the bytes that arrived since the last one, so a long line
        costs linear time.

        Args:
            separator: the bytes to look for (not empty).
            limit: the longest piece (separator included) accepted, 64 KiB by default like
                asyncio's; never more than the stream's receive window can hold.

        Raises:
            asyncio.IncompleteReadError: end of stream before the separator (``partial``
                holds what was read).
            asyncio.LimitOverrunError: more than ``limit`` bytes without a separator, or a
                separator found past ``limit``; the data stays buffered (``consumed`` tells
                how much of it was scanned).
        """
        seplen = len(separator)
        if seplen == 0:
            raise ValueError("separator should be at least one-byte string")
        offset = 0
        while True:
            size = self._size
            if size:
                i = self._find(separator, offset)
                if i >= 0:
                    if i > limit:
                        raise asyncio.LimitOverrunError(
                            "Separator is found, but chunk is longer than limit", i
                        )
                    return self._take(i + seplen)
                offset = max(0, size - seplen + 1)
                if size > limit:
                    raise asyncio.LimitOverrunError(
                        "Separator is not found, and chunk exceed the limit", offset
                    )
                if size >= self._read_limit() and not self._eof:
                    raise asyncio.LimitOverrunError(
                        "separator not found within the stream's receive window", offset
                    )
            if self._eof:
                if self._error is not None and not size:
                    raise self._error
                partial = self._take(size) if size else b""
                raise asyncio.IncompleteReadError(partial, None)
            fut = self._wait()
            try:
                await fut
            except GeneratorExit:  # closed, not cancelled: nobody waits on fut now
                if self._waiter is fut:
                    self._waiter = None  # type: ignore[misc]  # a slot
                raise

    async def readline(self, *, limit: int = LINE_LIMIT) -> bytes:
        """Read one line (ending in ``\n``); at end of stream, the partial line or ``b""``.

        Like ``asyncio.StreamReader.readline``: a line longer than ``limit`` raises
        ``ValueError`` after discarding it (up to its newline, or the whole buffer).
        """
        try:
            return await self.readuntil(b"\n", limit=limit)
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        except asyncio.LimitOverrunError as exc:
            i = self._find(b"\n", exc.consumed) if self._size else -1
            self._take(i + 1 if i >= 0 else self._size)
            raise ValueError(exc.args[0]) from None

    def __aiter__(self) -> ReadSide:
        return self

    async def __anext__(self) -> bytes:
        """``async for chunk in stream``: chunks of at most 64 KiB until end of stream.

        The stream is its own iterator (no async generator: those cost a loop hook, a weak
        reference set entry and a finalizer per stream).
        """
        while not self._size:
            if self._eof:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            fut = self._wait()
            try:
                await fut
            except GeneratorExit:  # closed, not cancelled: nobody waits on fut now
                if self._waiter is fut:
                    self._waiter = None  # type: ignore[misc]  # a slot
                raise
        return self._take(_READ_CHUNK)

    def _wait(self, need: int = 1) -> asyncio.Future[None]:
        """The future a read awaits until more data or the end arrives (a plain function,
        not a coroutine: no coroutine object per wait). Whoever completes it clears
        ``_waiter`` first; a done future left there (the read was cancelled) counts as none."""
        w = self._waiter
        if w is not None and not w.done():
            raise RuntimeError(f"stream {self._id}: another coroutine is already reading")
        self._before_wait(need)
        fut = self._waiter = self._loop.create_future()  # type: ignore[misc]  # a slot
        return fut

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None  # type: ignore[misc]
            if not w.done():
                w.set_result(None)
