"""Pure-Python twin of :mod:`mio._frame`: the MIO frame codec.

This module and the compiled ``_frame.pyx`` must behave identically; the test suite runs
every codec test against both. See ``docs/PROTOCOL.md`` for the wire format.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import index as _index
from typing import Any, NoReturn

from .errors import FrameError
from .wire import FLAG_MASK, HEADER_SIZE, MAX_STREAM_ID, MAX_VALUE

__all__ = (
    "FrameDecoder",
    "pack_header",
    "encode_open",
    "encode_data",
    "encode_window_update",
    "encode_rst",
    "encode_session_window_update",
    "encode_fin",
    "append_frame",
    "append_data",
    "KIND_OPEN",
    "KIND_DATA",
    "KIND_DATA_HFR",
    "KIND_WINDOW_UPDATE",
    "KIND_RST",
    "KIND_SESSION_WINDOW_UPDATE",
    "KIND_FIN",
)

# Frame kinds as passed to ``on_frame``; each is the frame's flags octet.
KIND_OPEN = 0x0C
KIND_DATA = 0x01
KIND_DATA_HFR = 0x11
KIND_WINDOW_UPDATE = 0x09
KIND_RST = 0x04
KIND_SESSION_WINDOW_UPDATE = 0x08
KIND_FIN = 0x02

_STREAM_KINDS = frozenset((KIND_OPEN, KIND_DATA, KIND_DATA_HFR, KIND_WINDOW_UPDATE, KIND_RST))
_SESSION_KINDS = frozenset((KIND_SESSION_WINDOW_UPDATE, KIND_FIN))
_DATA_KINDS = frozenset((KIND_DATA, KIND_DATA_HFR))
_ABSENT = object()  # FrameDecoder._routed: no sink for this stream id


# Integer arguments go through ``operator.index`` first (``PyNumber_Index`` in the compiled
# module), so a float is a TypeError in both implementations.
def _check(stream_id: int, value: int) -> None:
    stream_id = _index(stream_id)
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise ValueError(f"stream id {stream_id} out of range 0..{MAX_STREAM_ID}")
    value = _index(value)
    if not 0 <= value <= MAX_VALUE:
        raise ValueError(f"frame value {value} out of range 0..{MAX_VALUE}")


def _check_buf(buf: bytearray) -> None:
    # The compiled module types ``buf`` as exactly ``bytearray`` (not None, no subclass).
    if type(buf) is not bytearray:
        raise TypeError(
            f"Argument 'buf' has incorrect type (expected bytearray, got {type(buf).__name__})"
        )


def _contiguous(data: Any) -> memoryview:
    # What the compiled module gets from PyObject_GetBuffer(data, PyBUF_SIMPLE), same errors.
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None
    if not view.c_contiguous:
        view.release()  # the traceback must not keep the caller's buffer exported
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    return view


def pack_header(stream_id: int, value: int, flags: int) -> bytes:
    """Return the 8-octet header for ``stream_id``, ``value`` and ``flags``."""
    # _check inlined: this is the twin's per-frame encode path.
    stream_id = _index(stream_id)
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise ValueError(f"stream id {stream_id} out of range 0..{MAX_STREAM_ID}")
    value = _index(value)
    if not 0 <= value <= MAX_VALUE:
        raise ValueError(f"frame value {value} out of range 0..{MAX_VALUE}")
    flags = _index(flags)
    if not 0 <= flags <= 0xFF:
        raise ValueError(f"flags {flags} out of range 0..255")
    return (stream_id << 32 | value << 8 | flags).to_bytes(8, "big")


def encode_open(stream_id: int, window: int) -> bytes:
    """OPEN (0x0C): open ``stream_id`` advertising ``window`` for both directions."""
    return pack_header(stream_id, window, KIND_OPEN)


def encode_window_update(stream_id: int, increment: int) -> bytes:
    """Stream WINDOW UPDATE (0x09)."""
    return pack_header(stream_id, increment, KIND_WINDOW_UPDATE)


def encode_rst(stream_id: int, code: int) -> bytes:
    """RST (0x04) of ``stream_id`` with error ``code``."""
    return pack_header(stream_id, code, KIND_RST)


def encode_session_window_update(increment: int = 0) -> bytes:
    """Session WINDOW UPDATE (0x08 on stream 0); increment 0 is a keepalive."""
    return pack_header(0, increment, KIND_SESSION_WINDOW_UPDATE)


def encode_fin(code: int = 0) -> bytes:
    """Session FIN (0x02 on stream 0) with error ``code``."""
    return pack_header(0, code, KIND_FIN)


def _check_frame_size(max_frame_size: int) -> None:
    max_frame_size = _index(max_frame_size)
    if not 1 <= max_frame_size <= MAX_VALUE:
        raise ValueError(f"max_frame_size {max_frame_size} out of range 1..{MAX_VALUE}")


def encode_data(
    stream_id: int, data: Any, max_frame_size: int = MAX_VALUE, hfr: bool = False
) -> list[Any]:
    """Split ``data`` into DATA frames of at most ``max_frame_size`` payload octets.

    Returns a list alternating header ``bytes`` and payload ``memoryview`` slices of
    ``data`` (no payload is copied), ready for ``transport.writelines``. With ``hfr`` the
    last frame carries HFR (half-close); empty ``data`` with ``hfr`` gives one empty
    DATA+HFR frame, empty ``data`` without it gives an empty list.
    """
    _check_frame_size(max_frame_size)
    _check(stream_id, 0)
    if stream_id == 0:
        raise ValueError("DATA frames need a non-zero stream id")
    # Every conversion that can fail comes before ``data`` is exported (same in _frame.pyx).
    hfr = bool(hfr)
    max_frame_size = _index(max_frame_size)
    view = memoryview(data).cast("B")
    n = len(view)
    out: list[Any] = []
    if n == 0:
        if hfr:
            out.append(pack_header(stream_id, 0, KIND_DATA_HFR))
        return out
    pos = 0
    while pos < n:
        size = min(max_frame_size, n - pos)
        last = pos + size == n
        out.append(pack_header(stream_id, size, KIND_DATA_HFR if hfr and last else KIND_DATA))
        out.append(view[pos : pos + size])
        pos += size
    return out


def append_frame(buf: bytearray, stream_id: int, value: int, flags: int) -> None:
    """Append one header-only frame to ``buf``."""
    _check_buf(buf)
    buf += pack_header(stream_id, value, flags)


def append_data(
    buf: bytearray, stream_id: int, data: Any, max_frame_size: int = MAX_VALUE, hfr: bool = False
) -> None:
    """Append the DATA frames of ``data`` (see :func:`encode_data`) to ``buf``."""
    _check_buf(buf)
    _check_frame_size(max_frame_size)
    _check(stream_id, 0)
    if stream_id == 0:
        raise ValueError("DATA frames need a non-zero stream id")
    # Every conversion that can fail comes before ``data`` is exported (same in _frame.pyx).
    hfr = bool(hfr)
    max_frame_size = _index(max_frame_size)
    view = _contiguous(data)
    try:
        if view.ndim != 1 or view.itemsize != 1:
            # Like the compiled module, take any contiguous buffer as its raw bytes.
            raw = view.tobytes()
            view.release()
            view = memoryview(raw)
        n = len(view)
        if n == 0:
            if hfr:
                buf += pack_header(stream_id, 0, KIND_DATA_HFR)
            return
        pos = 0
        while pos < n:
            size = min(max_frame_size, n - pos)
            last = pos + size == n
            buf += pack_header(stream_id, size, KIND_DATA_HFR if hfr and last else KIND_DATA)
            buf += view[pos : pos + size]
            pos += size
    finally:
        view.release()  # like PyBuffer_Release: ``data`` is not held after the call


class FrameDecoder:
    """Incremental MIO frame decoder.

    Feed it bytes as they arrive, in chunks of any size. For each frame it makes one call:

    * ``on_data(stream_id, payload, end)`` for DATA and DATA+HFR. A payload that spans
      several feeds is delivered in pieces as it arrives (one call per piece); ``end`` is
      true on the last piece of a DATA+HFR frame only. Empty DATA frames are delivered too.
    * ``on_frame(kind, stream_id, value)`` for every other frame: ``kind`` is one of the
      ``KIND_*`` constants (the frame's flags octet with reserved bits cleared).

    With ``sinks`` (a dict of stream id to receiver), DATA for a stream id in it goes to
    ``sinks[stream_id]._feed(payload, end)`` instead of ``on_data`` (the dict is looked up
    per frame, so it may change from one frame to the next): the session hands it its
    stream table, which saves a Python-level dispatch call per DATA frame.

    With ``assemble_max`` > 0, a payload of at most that many bytes that does not end in
    the chunk being fed, but of which at least an eighth is in it, is *assembled* instead:
    the decoder allocates it whole (:attr:`assembling` is its size), copies what arrived
    into it, and delivers it in one ``on_data`` call once complete. Meanwhile
    :meth:`payload_buffer` gives the unfilled rest as a writable buffer, so a transport can
    read the payload straight into it (``BufferedProtocol.get_buffer``) and report with
    :meth:`payload_filled`: one copy (the kernel's) instead of two, and payloads reach the
    reader whole.

    Invalid frames raise :class:`~mio.FrameError` naming the frame; after an error the
    decoder is broken and every later :meth:`feed` raises the same error. Callbacks must
    not raise: an exception from a callback propagates and the rest of that chunk is lost.
    """

    __slots__ = (
        "_assemble_max",
        "_error",
        "_filled",
        "_frames",
        "_hbuf",
        "_hfr",
        "_max_frame_size",
        "_offset",
        "_on_data",
        "_on_frame",
        "_payload",
        "_plain_on_data",
        "_remaining",
        "_sid",
        "_sinks",
    )

    def __init__(
        self,
        on_data: Callable[[int, bytes, bool], object],
        on_frame: Callable[[int, int, int], object],
        max_frame_size: int = MAX_VALUE,
        assemble_max: int = 0,
        sinks: dict[int, Any] | None = None,
    ) -> None:
        _check_frame_size(max_frame_size)
        assemble_max = _index(assemble_max)
        if not 0 <= assemble_max <= MAX_VALUE:
            raise ValueError(f"assemble_max must be in 0..{MAX_VALUE}")
        self._assemble_max = assemble_max
        self._payload: bytearray | None = None
        self._filled = 0
        if sinks is not None and type(sinks) is not dict:
            raise TypeError(f"sinks must be a dict or None, not {type(sinks).__name__}")
        self._sinks = sinks
        self._plain_on_data = on_data
        self._on_data = on_data if sinks is None else self._routed
        self._on_frame = on_frame
        self._max_frame_size = _index(max_frame_size)
        self._hbuf = bytearray()
        self._remaining = 0
        self._sid = 0
        self._hfr = False
        self._offset = 0
        self._frames = 0
        self._error: FrameError | None = None

    @property
    def max_frame_size(self) -> int:
        """Largest DATA payload accepted; a larger one is a :class:`~mio.FrameError`."""
        return self._max_frame_size

    @property
    def frames(self) -> int:
        """Number of frames decoded so far (counted when their header is complete)."""
        return self._frames

    @property
    def offset(self) -> int:
        """Bytes decoded so far (a partial header counts once it is complete)."""
        return self._offset

    @property
    def in_frame(self) -> bool:
        """True when the bytes fed so far end inside a frame (header or payload)."""
        return bool(self._hbuf) or self._remaining > 0

    @property
    def assemble_max(self) -> int:
        """Largest payload assembled whole (0: every payload is delivered in pieces)."""
        return self._assemble_max

    @property
    def assembling(self) -> int:
        """Size of the payload being assembled (allocated, partly filled); 0 if none."""
        return 0 if self._payload is None else len(self._payload)

    def payload_buffer(self) -> memoryview | None:
        """The unfilled rest of the payload being assembled, as a writable buffer, or None.

        Write into it, then call :meth:`payload_filled` with the number of bytes written,
        before any other call to this decoder."""
        if self._payload is None:
            return None
        if self._error is not None:
            raise self._error
        return memoryview(self._payload)[self._filled :]

    def payload_filled(self, nbytes: int) -> None:
        """``nbytes`` were written at the start of :meth:`payload_buffer`; deliver the
        payload if it is complete."""
        n = _index(nbytes)
        if self._error is not None:
            raise self._error
        if self._payload is None or not 0 <= n <= self._remaining:
            raise ValueError(f"payload_filled({n}) without a payload buffer of at least that size")
        self._filled += n
        self._remaining -= n
        self._offset += n
        if not self._remaining:
            self._deliver()

    def _deliver(self) -> None:
        payload = self._payload
        assert payload is not None
        self._payload = None
        self._filled = 0
        self._on_data(self._sid, bytes(payload), self._hfr)

    def _routed(self, stream_id: int, payload: bytes, end: bool) -> None:
        sink = self._sinks.get(stream_id, _ABSENT)  # type: ignore[union-attr]
        if sink is not _ABSENT:
            sink._feed(payload, end)
        else:
            self._plain_on_data(stream_id, payload, end)

    def __reduce__(self) -> NoReturn:
        # A decoder holds callbacks and possibly part of a frame: it is neither pickled nor
        # copied (Cython's automatic pickling would mangle the partial header buffer).
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")

    def feed(self, data: Any) -> None:
        """Decode ``data`` (any bytes-like object), dispatching every complete frame."""
        if self._error is not None:
            raise self._error
        if not isinstance(data, bytes):
            data = _contiguous(data).tobytes()
        n = len(data)
        pos = 0
        on_data = self._on_data
        while pos < n:
            remaining = self._remaining
            if remaining:
                take = min(remaining, n - pos)
                self._remaining = remaining - take
                self._offset += take
                payload = self._payload
                if payload is not None:
                    filled = self._filled
                    payload[filled : filled + take] = data[pos : pos + take]
                    self._filled = filled + take
                    pos += take
                    if not self._remaining:
                        self._deliver()
                    continue
                chunk = data[pos : pos + take]
                pos += take
                on_data(self._sid, chunk, self._hfr and self._remaining == 0)
                continue
            hbuf = self._hbuf
            if hbuf or n - pos < HEADER_SIZE:
                take = min(HEADER_SIZE - len(hbuf), n - pos)
                hbuf += data[pos : pos + take]
                pos += take
                if len(hbuf) < HEADER_SIZE:
                    break
                word = int.from_bytes(hbuf, "big")
                hbuf.clear()
            else:
                word = int.from_bytes(data[pos : pos + HEADER_SIZE], "big")
                pos += HEADER_SIZE
            self._header(word)
            remaining = self._remaining
            if (
                remaining
                and remaining <= self._assemble_max
                and n - pos < remaining
                and (n - pos) * 8 >= remaining
            ):
                # A DATA payload that does not end in this chunk but an eighth of it is here
                # (what a peer makes us allocate is at most 8x what it sent): assemble it
                self._payload = bytearray(remaining)

    def _fail(self, message: str, flags: int, stream_id: int) -> None:
        self._error = FrameError(message, self._offset, flags, stream_id)
        raise self._error

    def _header(self, word: int) -> None:
        stream_id = (word >> 32) & MAX_STREAM_ID
        value = (word >> 8) & MAX_VALUE
        raw_flags = word & 0xFF
        kind = raw_flags & FLAG_MASK
        if kind in _DATA_KINDS:
            if stream_id == 0:
                self._fail("DATA frame on stream 0", raw_flags, stream_id)
            if value > self._max_frame_size:
                self._fail(
                    f"DATA payload of {value} bytes exceeds the maximum frame size "
                    f"{self._max_frame_size}",
                    raw_flags,
                    stream_id,
                )
            self._offset += HEADER_SIZE
            self._frames += 1
            hfr = kind == KIND_DATA_HFR
            if value:
                self._remaining = value
                self._sid = stream_id
                self._hfr = hfr
            else:
                self._on_data(stream_id, b"", hfr)
            return
        if kind in _STREAM_KINDS:
            if stream_id == 0:
                self._fail("stream frame on stream 0", raw_flags, stream_id)
        elif kind in _SESSION_KINDS:
            if stream_id != 0:
                self._fail("session frame on a non-zero stream id", raw_flags, stream_id)
        else:
            self._fail("flags are not a frame kind", raw_flags, stream_id)
        self._offset += HEADER_SIZE
        self._frames += 1
        self._on_frame(kind, stream_id, value)
