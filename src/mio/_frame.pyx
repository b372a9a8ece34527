# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled MIO frame codec. Its pure-Python twin is :mod:`mio._frame_py`.

Both must behave identically (the test suite runs every codec test against each).
Indices in this module are proven by the surrounding length checks, which is why bounds
and wraparound checks are off; every read of input is guarded by ``pos < n`` arithmetic.
"""

from cpython.buffer cimport (
    PyBUF_SIMPLE, PyBuffer_FillInfo, PyBuffer_Release, PyObject_GetBuffer,
)
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItemWithError
from cpython.object cimport PyObject
from cpython.number cimport PyNumber_Index
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from .errors import FrameError
from .wire import MAX_STREAM_ID, MAX_VALUE

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

cdef enum:
    C_HEADER_SIZE = 8
    C_FLAG_MASK = 0x1F
    C_MAX_VALUE = 0xFFFFFF
    C_MAX_STREAM_ID = 0x7FFFFFFF

cdef enum:
    K_OPEN = 0x0C
    K_DATA = 0x01
    K_DATA_HFR = 0x11
    K_WINDOW_UPDATE = 0x09
    K_RST = 0x04
    K_SESSION_WINDOW_UPDATE = 0x08
    K_FIN = 0x02


# Integer arguments go through ``PyNumber_Index`` first (``operator.index`` in the twin), so
# a float is a TypeError in both implementations instead of being truncated here.
cdef inline void _check(object stream_id, object value) except *:
    stream_id = PyNumber_Index(stream_id)
    if not 0 <= stream_id <= C_MAX_STREAM_ID:
        raise ValueError(f"stream id {stream_id} out of range 0..{MAX_STREAM_ID}")
    value = PyNumber_Index(value)
    if not 0 <= value <= C_MAX_VALUE:
        raise ValueError(f"frame value {value} out of range 0..{MAX_VALUE}")


cdef inline void _check_flags(object flags) except *:
    flags = PyNumber_Index(flags)
    if not 0 <= flags <= 0xFF:
        raise ValueError(f"flags {flags} out of range 0..255")


cdef inline void _check_frame_size(object max_frame_size) except *:
    max_frame_size = PyNumber_Index(max_frame_size)
    if not 1 <= max_frame_size <= C_MAX_VALUE:
        raise ValueError(f"max_frame_size {max_frame_size} out of range 1..{MAX_VALUE}")


cdef inline void _check_assemble_max(object assemble_max) except *:
    cdef object n = PyNumber_Index(assemble_max)
    if not 0 <= n <= C_MAX_VALUE:
        raise ValueError(f"assemble_max must be in 0..{MAX_VALUE}")


cdef class _PayloadTail:
    """The unfilled rest of a payload being assembled, exported as a writable buffer.

    The payload is a ``bytes`` object nobody else holds until the decoder delivers it, so
    filling it in place is safe (the documented way to build a ``bytes`` from C)."""

    cdef object _payload
    cdef Py_ssize_t _start
    cdef Py_ssize_t _len

    def __getbuffer__(self, Py_buffer* view, int flags):
        PyBuffer_FillInfo(
            view, self, PyBytes_AS_STRING(self._payload) + self._start, self._len, 0, flags
        )

    def __releasebuffer__(self, Py_buffer* view):
        pass


cdef inline void _write_header(char* p, uint32_t sid, uint32_t value, uint8_t flags) noexcept:
    cdef uint8_t* q = <uint8_t*>p
    q[0] = (sid >> 24) & 0xFF
    q[1] = (sid >> 16) & 0xFF
    q[2] = (sid >> 8) & 0xFF
    q[3] = sid & 0xFF
    q[4] = (value >> 16) & 0xFF
    q[5] = (value >> 8) & 0xFF
    q[6] = value & 0xFF
    q[7] = flags


cdef inline bytes _header(uint32_t sid, uint32_t value, uint8_t flags):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, C_HEADER_SIZE)
    _write_header(PyBytes_AS_STRING(out), sid, value, flags)
    return out


def pack_header(stream_id, value, flags):
    """Return the 8-octet header for ``stream_id``, ``value`` and ``flags``."""
    _check(stream_id, value)
    _check_flags(flags)
    return _header(stream_id, value, flags)


def encode_open(stream_id, window):
    """OPEN (0x0C): open ``stream_id`` advertising ``window`` for both directions."""
    _check(stream_id, window)
    return _header(stream_id, window, K_OPEN)


def encode_window_update(stream_id, increment):
    """Stream WINDOW UPDATE (0x09)."""
    _check(stream_id, increment)
    return _header(stream_id, increment, K_WINDOW_UPDATE)


def encode_rst(stream_id, code):
    """RST (0x04) of ``stream_id`` with error ``code``."""
    _check(stream_id, code)
    return _header(stream_id, code, K_RST)


def encode_session_window_update(increment=0):
    """Session WINDOW UPDATE (0x08 on stream 0); increment 0 is a keepalive."""
    _check(0, increment)
    return _header(0, increment, K_SESSION_WINDOW_UPDATE)


def encode_fin(code=0):
    """Session FIN (0x02 on stream 0) with error ``code``."""
    _check(0, code)
    return _header(0, code, K_FIN)


def encode_data(stream_id, data, max_frame_size=MAX_VALUE, hfr=False):
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
    # Every conversion that can fail comes before ``data`` is exported (same in the twin).
    cdef bint h = bool(hfr)
    cdef Py_ssize_t mfs = max_frame_size
    cdef uint32_t sid = stream_id
    cdef object view = memoryview(data).cast("B")
    cdef Py_ssize_t n = len(view)
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t size
    cdef bint last
    cdef list out = []
    if n == 0:
        if h:
            out.append(_header(sid, 0, K_DATA_HFR))
        return out
    while pos < n:
        size = mfs if n - pos > mfs else n - pos
        last = pos + size == n
        out.append(_header(sid, <uint32_t>size, K_DATA_HFR if h and last else K_DATA))
        out.append(view[pos:pos + size])
        pos += size
    return out


def append_frame(bytearray buf not None, stream_id, value, flags):
    """Append one header-only frame to ``buf``."""
    _check(stream_id, value)
    _check_flags(flags)
    # Convert before resizing, so a failed conversion never leaves bytes behind in ``buf``.
    cdef uint32_t sid = stream_id
    cdef uint32_t v = value
    cdef uint8_t f = flags
    cdef Py_ssize_t old = PyByteArray_GET_SIZE(buf)
    PyByteArray_Resize(buf, old + C_HEADER_SIZE)
    _write_header(PyByteArray_AS_STRING(buf) + old, sid, v, f)


def append_data(bytearray buf not None, stream_id, data, max_frame_size=MAX_VALUE, hfr=False):
    """Append the DATA frames of ``data`` (see :func:`encode_data`) to ``buf``."""
    _check_frame_size(max_frame_size)
    _check(stream_id, 0)
    if stream_id == 0:
        raise ValueError("DATA frames need a non-zero stream id")
    # Every conversion that can fail comes before ``data`` is exported: nothing may raise
    # between PyObject_GetBuffer and the try/finally that releases it.
    cdef bint h = bool(hfr)
    cdef Py_ssize_t mfs = max_frame_size
    cdef uint32_t sid = stream_id
    cdef Py_ssize_t frames, pos, size, old
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    cdef Py_ssize_t n = view.len
    cdef char* src = <char*>view.buf
    cdef char* dst
    try:
        if n == 0:
            if h:
                old = PyByteArray_GET_SIZE(buf)
                PyByteArray_Resize(buf, old + C_HEADER_SIZE)
                _write_header(PyByteArray_AS_STRING(buf) + old, sid, 0, K_DATA_HFR)
            return
        frames = (n + mfs - 1) // mfs
        old = PyByteArray_GET_SIZE(buf)
        PyByteArray_Resize(buf, old + n + frames * C_HEADER_SIZE)
        dst = PyByteArray_AS_STRING(buf) + old
        pos = 0
        while pos < n:
            size = mfs if n - pos > mfs else n - pos
            _write_header(dst, sid, <uint32_t>size,
                          K_DATA_HFR if h and pos + size == n else K_DATA)
            dst += C_HEADER_SIZE
            memcpy(dst, src + pos, size)
            dst += size
            pos += size
    finally:
        PyBuffer_Release(&view)


cdef class FrameDecoder:
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

    cdef object _on_data
    cdef object _on_frame
    cdef dict _sinks
    cdef uint32_t _max_frame_size
    cdef uint8_t _hbuf[8]
    cdef Py_ssize_t _hlen
    cdef uint32_t _remaining
    cdef uint32_t _sid
    cdef bint _hfr
    cdef uint64_t _offset
    cdef uint64_t _frames
    cdef object _error
    cdef uint32_t _assemble_max
    cdef object _payload  # bytes being assembled (written only while nobody else sees it)
    cdef Py_ssize_t _filled

    def __init__(self, on_data, on_frame, max_frame_size=MAX_VALUE, assemble_max=0, sinks=None):
        _check_frame_size(max_frame_size)
        _check_assemble_max(assemble_max)
        if sinks is not None and type(sinks) is not dict:
            raise TypeError(f"sinks must be a dict or None, not {type(sinks).__name__}")
        self._sinks = sinks
        self._assemble_max = assemble_max
        self._payload = None
        self._filled = 0
        self._on_data = on_data
        self._on_frame = on_frame
        self._max_frame_size = max_frame_size
        self._hlen = 0
        self._remaining = 0
        self._sid = 0
        self._hfr = False
        self._offset = 0
        self._frames = 0
        self._error = None

    @property
    def max_frame_size(self):
        """Largest DATA payload accepted; a larger one is a :class:`~mio.FrameError`."""
        return self._max_frame_size

    @property
    def frames(self):
        """Number of frames decoded so far (counted when their header is complete)."""
        return self._frames

    @property
    def offset(self):
        """Bytes decoded so far (a partial header counts once it is complete)."""
        return self._offset

    @property
    def in_frame(self):
        """True when the bytes fed so far end inside a frame (header or payload)."""
        return self._hlen > 0 or self._remaining > 0

    @property
    def assemble_max(self):
        """Largest payload assembled whole (0: every payload is delivered in pieces)."""
        return self._assemble_max

    @property
    def assembling(self):
        """Size of the payload being assembled (allocated, partly filled); 0 if none."""
        return 0 if self._payload is None else PyBytes_GET_SIZE(self._payload)

    def payload_buffer(self):
        """The unfilled rest of the payload being assembled, as a writable buffer, or None.

        Write into it, then call :meth:`payload_filled` with the number of bytes written,
        before any other call to this decoder."""
        cdef _PayloadTail tail
        if self._payload is None:
            return None
        if self._error is not None:
            raise self._error
        tail = _PayloadTail.__new__(_PayloadTail)
        tail._payload = self._payload
        tail._start = self._filled
        tail._len = self._remaining
        return memoryview(tail)

    def payload_filled(self, nbytes):
        """``nbytes`` were written at the start of :meth:`payload_buffer`; deliver the
        payload if it is complete."""
        cdef object index = PyNumber_Index(nbytes)  # range-checked before the C cast
        cdef Py_ssize_t n
        if self._error is not None:
            raise self._error
        if self._payload is None or not 0 <= index <= self._remaining:
            raise ValueError(
                f"payload_filled({index}) without a payload buffer of at least that size"
            )
        n = index
        self._filled += n
        self._remaining -= <uint32_t>n
        self._offset += <uint64_t>n
        if not self._remaining:
            self._deliver()

    cdef int _deliver(self) except -1:
        payload = self._payload
        self._payload = None
        self._filled = 0
        self._data(self._sid, payload, self._hfr)
        return 0

    cdef inline int _data(self, uint32_t sid, object payload, bint end) except -1:
        cdef PyObject* sink
        if self._sinks is not None:
            sink = PyDict_GetItemWithError(self._sinks, sid)
            if sink is not NULL:
                (<object>sink)._feed(payload, end)
                return 0
        self._on_data(sid, payload, end)
        return 0

    def __reduce__(self):
        # A decoder holds callbacks and possibly part of a frame: it is neither pickled nor
        # copied (Cython's automatic pickling would mangle the partial header buffer).
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")

    def feed(self, data):
        """Decode ``data`` (any bytes-like object), dispatching every complete frame."""
        if self._error is not None:
            raise self._error
        cdef Py_buffer view
        cdef bint is_bytes = type(data) is bytes
        cdef const uint8_t* p
        cdef Py_ssize_t n
        if is_bytes:
            p = <const uint8_t*>PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            p = <const uint8_t*>view.buf
            n = view.len
        try:
            self._feed(data, p, n, is_bytes)
        finally:
            if not is_bytes:
                PyBuffer_Release(&view)

    cdef int _feed(self, object data, const uint8_t* p, Py_ssize_t n, bint is_bytes) except -1:
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t take
        cdef uint32_t sid, value
        cdef uint8_t raw_flags, kind
        cdef const uint8_t* h
        cdef object chunk
        cdef object on_frame = self._on_frame
        while pos < n:
            if self._remaining:
                take = self._remaining
                if take > n - pos:
                    take = n - pos
                self._remaining -= <uint32_t>take
                self._offset += <uint64_t>take
                if self._payload is not None:
                    memcpy(PyBytes_AS_STRING(self._payload) + self._filled, p + pos, take)
                    self._filled += take
                    pos += take
                    if not self._remaining:
                        self._deliver()
                    continue
                if is_bytes and pos == 0 and take == n:
                    chunk = data
                else:
                    chunk = PyBytes_FromStringAndSize(<const char*>p + pos, take)
                pos += take
                self._data(self._sid, chunk, self._hfr and self._remaining == 0)
                continue
            if self._hlen or n - pos < C_HEADER_SIZE:
                take = C_HEADER_SIZE - self._hlen
                if take > n - pos:
                    take = n - pos
                memcpy(&self._hbuf[self._hlen], p + pos, take)
                self._hlen += take
                pos += take
                if self._hlen < C_HEADER_SIZE:
                    break
                self._hlen = 0
                h = self._hbuf
            else:
                h = p + pos
                pos += C_HEADER_SIZE
            sid = ((<uint32_t>h[0] << 24) | (<uint32_t>h[1] << 16)
                   | (<uint32_t>h[2] << 8) | <uint32_t>h[3]) & C_MAX_STREAM_ID
            value = (<uint32_t>h[4] << 16) | (<uint32_t>h[5] << 8) | <uint32_t>h[6]
            raw_flags = h[7]
            kind = raw_flags & C_FLAG_MASK
            if kind == K_DATA or kind == K_DATA_HFR:
                if sid == 0:
                    self._fail("DATA frame on stream 0", raw_flags, sid)
                if value > self._max_frame_size:
                    self._fail(
                        f"DATA payload of {value} bytes exceeds the maximum frame size "
                        f"{self._max_frame_size}", raw_flags, sid)
                self._offset += C_HEADER_SIZE
                self._frames += 1
                if value:
                    self._remaining = value
                    self._sid = sid
                    self._hfr = kind == K_DATA_HFR
                    if value <= self._assemble_max and n - pos < value and (n - pos) * 8 >= value:
                        # It does not end in this chunk but an eighth of it is here (what a
                        # peer makes us allocate is at most 8x what it sent): assemble it
                        self._payload = PyBytes_FromStringAndSize(NULL, value)
                else:
                    self._data(sid, b"", kind == K_DATA_HFR)
                continue
            if kind == K_OPEN or kind == K_WINDOW_UPDATE or kind == K_RST:
                if sid == 0:
                    self._fail("stream frame on stream 0", raw_flags, sid)
            elif kind == K_SESSION_WINDOW_UPDATE or kind == K_FIN:
                if sid != 0:
                    self._fail("session frame on a non-zero stream id", raw_flags, sid)
            else:
                self._fail("flags are not a frame kind", raw_flags, sid)
            self._offset += C_HEADER_SIZE
            self._frames += 1
            on_frame(kind, sid, value)
        return 0

    cdef int _fail(self, str message, uint8_t flags, uint32_t sid) except -1:
        self._error = FrameError(message, self._offset, flags, sid)
        raise self._error
