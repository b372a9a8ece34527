"""The frame codec: golden vectors, encoding, argument validation and the incremental decoder.

Every test runs against the compiled module and its pure-Python twin (the ``impl`` fixture);
the few differential tests take ``both_impls``.
"""

from __future__ import annotations

import array
import copy
import pickle
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pytest

import mio
from mio.wire import MAX_STREAM_ID, MAX_VALUE, ErrorCode, FrameKind

if TYPE_CHECKING:
    from conftest import Impl

Event = tuple[Any, ...]


class Recorder:
    """Decoder callbacks that record ("data", sid, payload, end) / ("frame", kind, sid, value)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_data(self, stream_id: int, payload: bytes, end: bool) -> None:
        assert type(payload) is bytes
        self.events.append(("data", stream_id, payload, end))

    def on_frame(self, kind: int, stream_id: int, value: int) -> None:
        self.events.append(("frame", kind, stream_id, value))


def decoder(impl: Impl, max_frame_size: int = MAX_VALUE) -> tuple[Any, Recorder]:
    rec = Recorder()
    return impl.frame.FrameDecoder(rec.on_data, rec.on_frame, max_frame_size), rec


def decode(impl: Impl, chunks: Iterable[Any], max_frame_size: int = MAX_VALUE) -> list[Event]:
    dec, rec = decoder(impl, max_frame_size)
    for chunk in chunks:
        dec.feed(chunk)
    assert not dec.in_frame
    return rec.events


def header(stream_id: int, value: int, flags: int) -> bytes:
    """An independent header encoder for the tests (no code shared with the codec)."""
    return stream_id.to_bytes(4, "big") + value.to_bytes(3, "big") + bytes([flags])


# --------------------------------------------------------------------------------------------
# Golden vectors: each frame kind of the wire table as exact bytes.

# (name, encoder call, exact hex, the decoder event it gives)
GOLDEN: list[tuple[str, Callable[[Any], bytes], str, Event]] = [
    (
        "open",
        lambda f: f.encode_open(1, 0xFFFFFF),
        "00000001ffffff0c",
        ("frame", 0x0C, 1, 0xFFFFFF),
    ),
    (
        "open-max-id",
        lambda f: f.encode_open(MAX_STREAM_ID, 0x040000),
        "7fffffff0400000c",
        ("frame", 0x0C, MAX_STREAM_ID, 0x040000),
    ),
    (
        "window-update",
        lambda f: f.encode_window_update(7, 0x010000),
        "0000000701000009",
        ("frame", 0x09, 7, 0x010000),
    ),
    (
        "rst",
        lambda f: f.encode_rst(2, ErrorCode.REFUSED),
        "0000000200000404",
        ("frame", 0x04, 2, 4),
    ),
    (
        "rst-no-error",
        lambda f: f.encode_rst(0x01020304, 0),
        "0102030400000004",
        ("frame", 0x04, 0x01020304, 0),
    ),
    (
        "session-window-update",
        lambda f: f.encode_session_window_update(0x123456),
        "0000000012345608",
        ("frame", 0x08, 0, 0x123456),
    ),
    (
        "keepalive",
        lambda f: f.encode_session_window_update(),
        "0000000000000008",
        ("frame", 0x08, 0, 0),
    ),
    (
        "fin",
        lambda f: f.encode_fin(),
        "0000000000000002",
        ("frame", 0x02, 0, 0),
    ),
    (
        "fin-transport-closed",
        lambda f: f.encode_fin(ErrorCode.TRANSPORT_CLOSED),
        "0000000000000602",
        ("frame", 0x02, 0, 6),
    ),
    (
        "data",
        lambda f: b"".join(f.encode_data(3, b"hi")),
        "00000003000002016869",
        ("data", 3, b"hi", False),
    ),
    (
        "data-hfr",
        lambda f: b"".join(f.encode_data(5, b"abc", hfr=True)),
        "0000000500000311616263",
        ("data", 5, b"abc", True),
    ),
    (
        "data-hfr-empty",
        lambda f: b"".join(f.encode_data(9, b"", hfr=True)),
        "0000000900000011",
        ("data", 9, b"", True),
    ),
]


@pytest.mark.parametrize(
    ("encode", "hex_bytes"), [(g[1], g[2]) for g in GOLDEN], ids=[g[0] for g in GOLDEN]
)
def test_golden_encode(impl: Impl, encode: Callable[[Any], bytes], hex_bytes: str) -> None:
    assert encode(impl.frame) == bytes.fromhex(hex_bytes)


@pytest.mark.parametrize(
    ("hex_bytes", "event"), [(g[2], g[3]) for g in GOLDEN], ids=[g[0] for g in GOLDEN]
)
def test_golden_decode(impl: Impl, hex_bytes: str, event: Event) -> None:
    assert decode(impl, [bytes.fromhex(hex_bytes)]) == [event]


def test_golden_stream_of_every_kind(impl: Impl) -> None:
    stream = b"".join(bytes.fromhex(g[2]) for g in GOLDEN)
    assert decode(impl, [stream]) == [g[3] for g in GOLDEN]


def test_kind_constants_are_the_flags_octets(impl: Impl) -> None:
    f = impl.frame
    assert (f.KIND_OPEN, f.KIND_DATA, f.KIND_DATA_HFR, f.KIND_WINDOW_UPDATE) == (
        0x0C,
        0x01,
        0x11,
        0x09,
    )
    assert (f.KIND_RST, f.KIND_SESSION_WINDOW_UPDATE, f.KIND_FIN) == (0x04, 0x08, 0x02)
    for kind in FrameKind:
        assert getattr(f, f"KIND_{kind.name}") == kind


@pytest.mark.parametrize(
    ("stream_id", "value", "flags", "hex_bytes"),
    [
        (0, 0, 0, "0000000000000000"),
        (MAX_STREAM_ID, MAX_VALUE, 0xFF, "7fffffffffffffff"),
        (0x12345678, 0x9ABCDE, 0xF0, "123456789abcdef0"),
        (1, 2, 0x0C, "000000010000020c"),
    ],
)
def test_pack_header_and_append_frame(
    impl: Impl, stream_id: int, value: int, flags: int, hex_bytes: str
) -> None:
    expected = bytes.fromhex(hex_bytes)
    assert impl.frame.pack_header(stream_id, value, flags) == expected
    assert type(impl.frame.pack_header(stream_id, value, flags)) is bytes
    buf = bytearray(b"xy")
    impl.frame.append_frame(buf, stream_id, value, flags)
    assert buf == b"xy" + expected


def test_int_like_arguments(impl: Impl) -> None:
    f = impl.frame
    assert f.encode_rst(True, ErrorCode.CLOSED) == header(1, 3, 0x04)
    assert f.pack_header(1, 0, FrameKind.OPEN) == header(1, 0, 0x0C)


# --------------------------------------------------------------------------------------------
# encode_data / append_data.


def split_frames(pieces: list[Any]) -> list[tuple[bytes, bytes]]:
    """Pair up encode_data's alternating header/payload list: [(header, payload), ...]."""
    out = []
    i = 0
    while i < len(pieces):
        head = pieces[i]
        assert type(head) is bytes
        assert len(head) == 8
        length = int.from_bytes(head[4:7], "big")
        if length:
            out.append((head, bytes(pieces[i + 1])))
            i += 2
        else:
            out.append((head, b""))
            i += 1
    return out


@pytest.mark.parametrize(
    ("size", "max_frame_size", "lengths"),
    [
        (10, 4, [4, 4, 2]),
        (8, 4, [4, 4]),
        (3, 4, [3]),
        (1, 1, [1]),
        (5, 1, [1, 1, 1, 1, 1]),
        (1000, 128, [128] * 7 + [104]),
        (70000, MAX_VALUE, [70000]),
    ],
)
@pytest.mark.parametrize("hfr", [False, True])
def test_encode_data_splits(
    impl: Impl, size: int, max_frame_size: int, lengths: list[int], hfr: bool
) -> None:
    data = bytes(i % 251 for i in range(size))
    frames = split_frames(impl.frame.encode_data(7, data, max_frame_size, hfr))
    assert [int.from_bytes(h[4:7], "big") for h, _ in frames] == lengths
    assert all(h[:4] == (7).to_bytes(4, "big") for h, _ in frames)
    flags = [h[7] for h, _ in frames]
    if hfr:
        assert flags == [0x01] * (len(lengths) - 1) + [0x11]  # HFR on the last frame only
    else:
        assert flags == [0x01] * len(lengths)
    assert b"".join(p for _, p in frames) == data


def test_encode_data_empty(impl: Impl) -> None:
    assert impl.frame.encode_data(1, b"") == []
    assert impl.frame.encode_data(1, b"", 4) == []
    assert impl.frame.encode_data(1, b"", hfr=True) == [header(1, 0, 0x11)]
    assert impl.frame.encode_data(1, bytearray(), 1, True) == [header(1, 0, 0x11)]


def test_encode_data_keyword_arguments(impl: Impl) -> None:
    out = impl.frame.encode_data(stream_id=2, data=b"abcde", max_frame_size=2, hfr=True)
    assert [bytes(p) for p in out] == [
        header(2, 2, 0x01),
        b"ab",
        header(2, 2, 0x01),
        b"cd",
        header(2, 1, 0x11),
        b"e",
    ]


@pytest.mark.parametrize("kind", ["bytes", "bytearray"])
def test_encode_data_payloads_are_views_of_the_caller_buffer(impl: Impl, kind: str) -> None:
    data: bytes | bytearray = bytes(range(10)) if kind == "bytes" else bytearray(range(10))
    out = impl.frame.encode_data(1, data, 4)
    payloads = out[1::2]
    assert len(payloads) == 3
    for view in payloads:
        assert isinstance(view, memoryview)
        assert view.obj is data  # a slice of the caller's buffer, not a copy
        assert view.format == "B"
        assert view.readonly == (kind == "bytes")


def test_encode_data_does_not_copy(impl: Impl) -> None:
    data = bytearray(b"abcdef")
    out = impl.frame.encode_data(1, data, 3)
    data[0:6] = b"uvwxyz"
    assert [bytes(v) for v in out[1::2]] == [b"uvw", b"xyz"]
    for view in out[1::2]:
        view.release()  # so that the buffer can be resized again
    data += b"!"


def test_encode_data_memoryview_slice(impl: Impl) -> None:
    base = bytearray(b"0123456789")
    view = memoryview(base)[2:8]
    out = impl.frame.encode_data(1, view, 4)
    assert [bytes(p) for p in out[1::2]] == [b"2345", b"67"]
    for payload in out[1::2]:
        assert payload.obj is base


def test_encode_data_other_buffers(impl: Impl) -> None:
    ints = array.array("H", [0x0102, 0x0304])
    out = impl.frame.encode_data(1, ints, 3)
    assert b"".join(bytes(p) for p in out[1::2]) == ints.tobytes()
    assert [h[6] for h in out[0::2]] == [3, 1]


DATA_CASES = [
    (b"", 5, False),
    (b"", 5, True),
    (b"x", 1, False),
    (b"hello world", 3, True),
    (bytes(range(256)) * 20, 1000, False),
    (bytes(range(256)) * 20, 128, True),
    (bytes(range(256)) * 20, MAX_VALUE, True),
]


@pytest.mark.parametrize(("data", "max_frame_size", "hfr"), DATA_CASES)
@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_append_data_equals_joined_encode_data(
    impl: Impl, data: bytes, max_frame_size: int, hfr: bool, wrap: Callable[[bytes], Any]
) -> None:
    expected = b"".join(impl.frame.encode_data(11, wrap(data), max_frame_size, hfr))
    buf = bytearray(b"already queued")
    impl.frame.append_data(buf, 11, wrap(data), max_frame_size, hfr)
    assert buf == b"already queued" + expected
    buf2 = bytearray()
    impl.frame.append_data(buf2, stream_id=11, data=data, max_frame_size=max_frame_size, hfr=hfr)
    assert buf2 == expected


def test_append_data_takes_any_contiguous_buffer(impl: Impl) -> None:
    ints = array.array("i", range(10))
    buf = bytearray()
    impl.frame.append_data(buf, 3, ints, 7, True)
    decoded = decode(impl, [bytes(buf)])
    assert b"".join(e[2] for e in decoded) == ints.tobytes()
    assert [e[3] for e in decoded] == [False] * 5 + [True]


def test_append_data_snapshot(impl: Impl) -> None:
    data = bytearray(b"abc")
    buf = bytearray()
    impl.frame.append_data(buf, 1, data)
    data[:] = b"xyz"
    assert buf == header(1, 3, 0x01) + b"abc"


# --------------------------------------------------------------------------------------------
# Argument validation: the same exception type from both implementations.

VALUE_ERRORS: list[tuple[str, Callable[[Any], object]]] = [
    ("pack-negative-id", lambda f: f.pack_header(-1, 0, 1)),
    ("pack-id-too-big", lambda f: f.pack_header(MAX_STREAM_ID + 1, 0, 1)),
    ("pack-negative-value", lambda f: f.pack_header(1, -1, 1)),
    ("pack-value-too-big", lambda f: f.pack_header(1, MAX_VALUE + 1, 1)),
    ("pack-negative-flags", lambda f: f.pack_header(1, 0, -1)),
    ("pack-flags-too-big", lambda f: f.pack_header(1, 0, 0x100)),
    ("pack-huge-id", lambda f: f.pack_header(2**80, 0, 1)),
    ("open-id", lambda f: f.encode_open(MAX_STREAM_ID + 1, 0)),
    ("open-window", lambda f: f.encode_open(1, MAX_VALUE + 1)),
    ("window-update-negative", lambda f: f.encode_window_update(1, -1)),
    ("window-update-too-big", lambda f: f.encode_window_update(1, MAX_VALUE + 1)),
    ("rst-negative-id", lambda f: f.encode_rst(-1, 0)),
    ("rst-code", lambda f: f.encode_rst(1, MAX_VALUE + 1)),
    ("session-window-update", lambda f: f.encode_session_window_update(MAX_VALUE + 1)),
    ("session-window-update-negative", lambda f: f.encode_session_window_update(-1)),
    ("fin-negative", lambda f: f.encode_fin(-1)),
    ("fin-too-big", lambda f: f.encode_fin(MAX_VALUE + 1)),
    ("data-stream-0", lambda f: f.encode_data(0, b"x")),
    ("data-stream-0-empty", lambda f: f.encode_data(0, b"", hfr=True)),
    ("data-negative-id", lambda f: f.encode_data(-1, b"x")),
    ("data-id-too-big", lambda f: f.encode_data(MAX_STREAM_ID + 1, b"x")),
    ("data-frame-size-0", lambda f: f.encode_data(1, b"x", 0)),
    ("data-frame-size-negative", lambda f: f.encode_data(1, b"x", -5)),
    ("data-frame-size-too-big", lambda f: f.encode_data(1, b"x", MAX_VALUE + 1)),
    ("append-frame-id", lambda f: f.append_frame(bytearray(), MAX_STREAM_ID + 1, 0, 1)),
    ("append-frame-value", lambda f: f.append_frame(bytearray(), 1, MAX_VALUE + 1, 1)),
    ("append-frame-flags", lambda f: f.append_frame(bytearray(), 1, 0, 256)),
    ("append-data-stream-0", lambda f: f.append_data(bytearray(), 0, b"x")),
    ("append-data-frame-size", lambda f: f.append_data(bytearray(), 1, b"x", 0)),
    ("append-data-frame-size-big", lambda f: f.append_data(bytearray(), 1, b"", MAX_VALUE + 1)),
    ("decoder-frame-size-0", lambda f: f.FrameDecoder(print, print, 0)),
    ("decoder-frame-size-too-big", lambda f: f.FrameDecoder(print, print, MAX_VALUE + 1)),
]

TYPE_ERRORS: list[tuple[str, Callable[[Any], object]]] = [
    ("pack-float-id", lambda f: f.pack_header(1.0, 0, 1)),
    ("pack-float-value", lambda f: f.pack_header(1, 2.5, 1)),
    ("pack-float-flags", lambda f: f.pack_header(1, 0, 1.0)),
    ("pack-none", lambda f: f.pack_header(None, 0, 1)),
    ("open-float-window", lambda f: f.encode_open(1, 5.0)),
    ("data-float-id", lambda f: f.encode_data(1.0, b"")),
    ("data-float-frame-size", lambda f: f.encode_data(1, b"", 5.0)),
    ("data-str", lambda f: f.encode_data(1, "text")),
    ("data-int", lambda f: f.encode_data(1, 5)),
    ("append-frame-bytes-buffer", lambda f: f.append_frame(b"", 1, 0, 1)),
    ("append-frame-none-buffer", lambda f: f.append_frame(None, 1, 0, 1)),
    ("append-frame-list-buffer", lambda f: f.append_frame([], 1, 0, 1)),
    ("append-data-bytes-buffer", lambda f: f.append_data(b"", 1, b"x")),
    ("append-data-none-buffer", lambda f: f.append_data(None, 1, b"x")),
    ("append-data-str", lambda f: f.append_data(bytearray(), 1, "text")),
    ("append-data-float-frame-size", lambda f: f.append_data(bytearray(), 1, b"", 2.0)),
    ("decoder-float-frame-size", lambda f: f.FrameDecoder(print, print, 100.0)),
    ("decoder-none-frame-size", lambda f: f.FrameDecoder(print, print, None)),
]


@pytest.mark.parametrize("call", [c for _, c in VALUE_ERRORS], ids=[n for n, _ in VALUE_ERRORS])
def test_value_errors(impl: Impl, call: Callable[[Any], object]) -> None:
    with pytest.raises(ValueError, match=r"out of range|need a non-zero stream id") as info:
        call(impl.frame)
    assert not isinstance(info.value, mio.MioError)  # a caller's mistake, not the peer's


@pytest.mark.parametrize("call", [c for _, c in TYPE_ERRORS], ids=[n for n, _ in TYPE_ERRORS])
def test_type_errors(impl: Impl, call: Callable[[Any], object]) -> None:
    with pytest.raises(TypeError):
        call(impl.frame)


def test_errors_identical_across_implementations(both_impls: list[Impl]) -> None:
    for name, call in [*VALUE_ERRORS, *TYPE_ERRORS]:
        seen = set()
        for impl in both_impls:
            with pytest.raises((ValueError, TypeError)) as info:
                call(impl.frame)
            seen.add((type(info.value), str(info.value)))
        assert len(seen) == 1, (name, seen)


FAILED_APPENDS: list[tuple[str, Callable[[Any, bytearray], object]]] = [
    ("frame-value", lambda f, buf: f.append_frame(buf, 1, MAX_VALUE + 1, 1)),
    ("frame-float-id", lambda f, buf: f.append_frame(buf, 1.0, 0, 1)),
    ("data-stream-0", lambda f, buf: f.append_data(buf, 0, b"x")),
    ("data-frame-size-0", lambda f, buf: f.append_data(buf, 1, b"abc", 0)),
    ("data-str", lambda f, buf: f.append_data(buf, 1, "abc")),
    ("data-non-contiguous", lambda f, buf: f.append_data(buf, 1, memoryview(b"abcdef")[::2])),
    ("data-into-itself", lambda f, buf: f.append_data(buf, 1, buf)),
]


@pytest.mark.parametrize("call", [c for _, c in FAILED_APPENDS], ids=[n for n, _ in FAILED_APPENDS])
def test_failed_append_leaves_buffer_unchanged(impl: Impl, call: Callable[..., object]) -> None:
    buf = bytearray(b"queued")
    with pytest.raises((ValueError, TypeError, BufferError)):
        call(impl.frame, buf)
    assert buf == b"queued"


class BadBool:
    def __bool__(self) -> bool:
        raise ZeroDivisionError("no truth value")


def test_failed_call_does_not_hold_the_callers_buffer(impl: Impl) -> None:
    data = bytearray(b"abc")
    buf = bytearray(b"queued")
    with pytest.raises(ZeroDivisionError):
        impl.frame.append_data(buf, 1, data, hfr=BadBool())
    data += b"d"  # not exported any more, even while the exception is still referenced
    with pytest.raises(ZeroDivisionError):
        impl.frame.encode_data(1, data, hfr=BadBool())
    data += b"e"
    with pytest.raises(BufferError):
        impl.frame.append_data(data, 1, data, 2, True)  # appending a buffer to itself
    data += b"f"
    assert buf == b"queued"
    assert data == b"abcdef"


def test_bounds_are_inclusive(impl: Impl) -> None:
    f = impl.frame
    assert f.pack_header(MAX_STREAM_ID, MAX_VALUE, 0xFF) == b"\x7f" + b"\xff" * 7
    assert f.encode_data(MAX_STREAM_ID, b"ab", 1)[0] == header(MAX_STREAM_ID, 1, 0x01)
    assert f.encode_data(1, b"ab", MAX_VALUE)[0] == header(1, 2, 0x01)
    assert f.FrameDecoder(print, print, 1).max_frame_size == 1
    assert f.FrameDecoder(print, print, MAX_VALUE).max_frame_size == MAX_VALUE


# --------------------------------------------------------------------------------------------
# Decoder: dispatch, reserved bits, errors.


@pytest.mark.parametrize("reserved_flags", [0x20, 0x40, 0x80, 0xE0])
@pytest.mark.parametrize("reserved_id", [0, 0x80000000])
def test_reserved_bits_are_ignored(impl: Impl, reserved_flags: int, reserved_id: int) -> None:
    stream = b"".join(
        [
            header(reserved_id | 1, 100, 0x0C | reserved_flags),
            header(reserved_id | 1, 3, 0x01 | reserved_flags) + b"abc",
            header(reserved_id | 1, 1, 0x11 | reserved_flags) + b"d",
            header(reserved_id | 2, 0, 0x01 | reserved_flags),
            header(reserved_id | 1, 40, 0x09 | reserved_flags),
            header(reserved_id | 3, 2, 0x04 | reserved_flags),
            header(reserved_id, 7, 0x08 | reserved_flags),
            header(reserved_id, 1, 0x02 | reserved_flags),
        ]
    )
    assert decode(impl, [stream]) == [
        ("frame", 0x0C, 1, 100),
        ("data", 1, b"abc", False),
        ("data", 1, b"d", True),
        ("data", 2, b"", False),
        ("frame", 0x09, 1, 40),
        ("frame", 0x04, 3, 2),
        ("frame", 0x08, 0, 7),
        ("frame", 0x02, 0, 1),
    ]


KINDS = {0x0C, 0x01, 0x11, 0x09, 0x04, 0x08, 0x02}
STREAM_KINDS = [0x0C, 0x01, 0x11, 0x09, 0x04]
SESSION_KINDS = [0x08, 0x02]
NOT_A_KIND = sorted(set(range(0x20)) - KINDS)

# (name, header, expected message start)
BAD_FRAMES: list[tuple[str, bytes, str]] = [
    ("data-stream-0", header(0, 3, 0x01), "DATA frame on stream 0"),
    ("data-hfr-stream-0", header(0, 0, 0x11), "DATA frame on stream 0"),
    ("data-stream-0-reserved-bit", header(0x80000000, 3, 0x01), "DATA frame on stream 0"),
    ("open-stream-0", header(0, 0xFFFFFF, 0x0C), "stream frame on stream 0"),
    ("window-update-stream-0", header(0, 10, 0x09), "stream frame on stream 0"),
    ("rst-stream-0", header(0, 0, 0x04), "stream frame on stream 0"),
    ("rst-stream-0-reserved", header(0x80000000, 0, 0xE4), "stream frame on stream 0"),
    ("session-wu-stream-1", header(1, 10, 0x08), "session frame on a non-zero stream id"),
    ("fin-stream-5", header(5, 0, 0x02), "session frame on a non-zero stream id"),
    ("fin-max-stream", header(0xFFFFFFFF, 0, 0xE2), "session frame on a non-zero stream id"),
    *[
        (f"flags-0x{flags:02x}", header(1, 0, flags), "flags are not a frame kind")
        for flags in (0x00, 0x03, 0x0D, 0x19, 0x1F, 0x05, 0x0F, 0xE0, 0xFF)
    ],
    ("flags-0x00-stream-0", header(0, 0, 0x00), "flags are not a frame kind"),
]


def check_frame_error(err: BaseException, message: str, offset: int, head: bytes) -> None:
    sid = int.from_bytes(head[:4], "big") & 0x7FFFFFFF
    assert isinstance(err, mio.FrameError)
    assert isinstance(err, ValueError)
    assert isinstance(err, mio.ProtocolError)
    assert isinstance(err, mio.MioError)
    assert err.error_code == ErrorCode.PROTOCOL_ERROR
    assert err.offset == offset
    assert err.flags == head[7]  # the raw octet, reserved bits included
    assert err.stream_id == sid
    assert str(err) == (
        f"{message} (frame at offset {offset}, flags 0x{head[7]:02x}, stream {sid})"
    )


@pytest.mark.parametrize(
    ("head", "message"), [(b[1], b[2]) for b in BAD_FRAMES], ids=[b[0] for b in BAD_FRAMES]
)
def test_invalid_frame_raises(impl: Impl, head: bytes, message: str) -> None:
    dec, rec = decoder(impl)
    with pytest.raises(mio.FrameError) as info:
        dec.feed(head + b"trailing bytes")
    check_frame_error(info.value, message, 0, head)
    assert rec.events == []


@pytest.mark.parametrize("flags", NOT_A_KIND)
def test_every_flags_value_that_is_not_a_kind_raises(impl: Impl, flags: int) -> None:
    for sid in (0, 1):
        dec, _ = decoder(impl)
        with pytest.raises(mio.FrameError, match="flags are not a frame kind"):
            dec.feed(header(sid, 0, flags))


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_stream_kinds_need_a_stream(impl: Impl, kind: int) -> None:
    dec, _ = decoder(impl)
    with pytest.raises(mio.FrameError, match="on stream 0"):
        dec.feed(header(0, 0, kind))


@pytest.mark.parametrize("kind", SESSION_KINDS)
def test_session_kinds_need_stream_0(impl: Impl, kind: int) -> None:
    dec, _ = decoder(impl)
    with pytest.raises(mio.FrameError, match="session frame on a non-zero stream id"):
        dec.feed(header(MAX_STREAM_ID, 0, kind))


@pytest.mark.parametrize("split", [None, 1, 4, 7])
def test_error_offset_and_earlier_frames(impl: Impl, split: int | None) -> None:
    good = header(1, 5, 0x01) + b"hello" + header(1, 9, 0x09)  # 21 bytes
    bad = header(3, 0, 0x1F)
    dec, rec = decoder(impl)
    last = good + bad
    if split is not None:
        dec.feed(good + bad[:split])
        assert dec.in_frame
        last = bad[split:]
    with pytest.raises(mio.FrameError) as info:
        dec.feed(last)
    check_frame_error(info.value, "flags are not a frame kind", 21, bad)
    assert dec.offset == 21
    assert rec.events == [("data", 1, b"hello", False), ("frame", 0x09, 1, 9)]


def test_decoder_stays_broken(impl: Impl) -> None:
    dec, rec = decoder(impl)
    with pytest.raises(mio.FrameError) as first:
        dec.feed(header(0, 0, 0x01))
    for data in (b"", header(1, 0, 0x0C), bytearray(header(0, 0, 0x08))):
        with pytest.raises(mio.FrameError) as again:
            dec.feed(data)
        assert again.value is first.value
    assert rec.events == []
    assert dec.offset == 0


def test_oversized_data_frame(impl: Impl) -> None:
    dec, rec = decoder(impl, max_frame_size=100)
    dec.feed(header(1, 100, 0x01) + bytes(100))
    assert rec.events == [("data", 1, bytes(100), False)]
    head = header(1, 101, 0x11)
    with pytest.raises(mio.FrameError) as info:
        dec.feed(head + bytes(101))
    message = "DATA payload of 101 bytes exceeds the maximum frame size 100"
    check_frame_error(info.value, message, 108, head)
    assert len(rec.events) == 1


def test_oversize_limit_is_only_for_data(impl: Impl) -> None:
    # OPEN, WINDOW UPDATE, RST, FIN carry VALUE without a payload: no size limit applies.
    stream = header(1, MAX_VALUE, 0x0C) + header(1, MAX_VALUE, 0x09) + header(0, MAX_VALUE, 0x02)
    assert len(decode(impl, [stream], max_frame_size=1)) == 3


@pytest.mark.parametrize("clone", [copy.copy, copy.deepcopy, pickle.dumps])
def test_decoder_cannot_be_copied_or_pickled(impl: Impl, clone: Callable[[Any], object]) -> None:
    dec, _ = decoder(impl)
    dec.feed(header(1, 5, 0x01)[:3])
    with pytest.raises(TypeError, match="cannot pickle 'FrameDecoder' object"):
        clone(dec)


def test_callback_exception_propagates(impl: Impl) -> None:
    class Boom(Exception):
        pass

    def on_frame(kind: int, stream_id: int, value: int) -> None:
        raise Boom

    dec = impl.frame.FrameDecoder(lambda *a: None, on_frame)
    with pytest.raises(Boom):
        dec.feed(header(0, 0, 0x08))
    assert dec.offset == 8
    assert not dec.in_frame


# --------------------------------------------------------------------------------------------
# Decoder: incremental delivery.


@pytest.mark.parametrize(("flags", "end"), [(0x01, False), (0x11, True)])
def test_payload_split_across_feeds(impl: Impl, flags: int, end: bool) -> None:
    dec, rec = decoder(impl)
    dec.feed(header(9, 10, flags) + b"abc")
    assert rec.events == [("data", 9, b"abc", False)]
    dec.feed(b"defg")
    assert rec.events[-1] == ("data", 9, b"defg", False)
    dec.feed(b"hij" + header(9, 1, 0x09))
    assert rec.events[2:] == [("data", 9, b"hij", end), ("frame", 0x09, 9, 1)]


def test_header_split_across_feeds(impl: Impl) -> None:
    frame = header(4, 3, 0x11) + b"xyz"
    for cut in range(1, 8):
        assert decode(impl, [frame[:cut], frame[cut:]]) == [("data", 4, b"xyz", True)]
        assert decode(impl, [frame[:cut], b"", frame[cut:7], frame[7:]]) == [
            ("data", 4, b"xyz", True)
        ]


def test_largest_frame_is_delivered_as_it_arrives(impl: Impl) -> None:
    """A 16 MiB - 1 DATA frame fed in 64 KiB chunks: each chunk is delivered when fed."""
    chunk_size = 64 * 1024
    dec, rec = decoder(impl)
    dec.feed(header(1, MAX_VALUE, 0x11))
    assert dec.in_frame
    assert dec.offset == 8
    received = 0
    k = 0
    while received < MAX_VALUE:
        size = min(chunk_size, MAX_VALUE - received)
        chunk = bytes([k % 256]) * size  # the whole frame never exists in this test either
        dec.feed(chunk)
        # Delivered during this feed, in one piece, before the rest of the frame exists.
        assert len(rec.events) == 1
        _, sid, payload, end = rec.events.pop()
        assert (sid, payload, end) == (1, chunk, received + size == MAX_VALUE)
        received += size
        assert dec.offset == 8 + received
        k += 1
    assert k == 256
    assert not dec.in_frame
    dec.feed(header(0, 0, 0x02))
    assert rec.events == [("frame", 0x02, 0, 0)]


def frames_stream() -> tuple[bytes, list[Event]]:
    frames = [
        (header(1, 0x40000, 0x0C), ("frame", 0x0C, 1, 0x40000)),
        (header(1, 5, 0x01) + b"hello", ("data", 1, b"hello", False)),
        (header(0, 0, 0x08), ("frame", 0x08, 0, 0)),
        (header(2, 0, 0x01), ("data", 2, b"", False)),
        (header(1, 6, 0x11) + b" world", ("data", 1, b" world", True)),
        (header(1, 11, 0x09), ("frame", 0x09, 1, 11)),
        (header(3, 3, 0x04), ("frame", 0x04, 3, 3)),
        (header(0, 0, 0x02), ("frame", 0x02, 0, 0)),
    ]
    return b"".join(f for f, _ in frames), [e for _, e in frames]


class FrameJoiner(Recorder):
    """Like Recorder, but joins the pieces of each DATA frame into one event.

    A frame is complete when the decoder is no longer inside it when the piece is delivered.
    """

    decoder: Any = None
    pieces: list[bytes]

    def __init__(self) -> None:
        super().__init__()
        self.pieces = []
        self.piece_sizes: list[int] = []

    def on_data(self, stream_id: int, payload: bytes, end: bool) -> None:
        assert type(payload) is bytes
        self.pieces.append(payload)
        self.piece_sizes.append(len(payload))
        if self.decoder.in_frame:
            assert not end
            return
        self.events.append(("data", stream_id, b"".join(self.pieces), end))
        self.pieces = []


def test_one_byte_at_a_time(impl: Impl) -> None:
    stream, expected = frames_stream()
    rec = FrameJoiner()
    dec = rec.decoder = impl.frame.FrameDecoder(rec.on_data, rec.on_frame)
    for i in range(len(stream)):
        dec.feed(stream[i : i + 1])
    assert not dec.in_frame
    assert dec.offset == len(stream)
    assert rec.events == expected
    assert rec.piece_sizes == [1] * 5 + [0] + [1] * 6  # every byte delivered as it came


def test_offset_and_in_frame(impl: Impl) -> None:
    dec, _ = decoder(impl)
    assert dec.offset == 0
    assert not dec.in_frame
    dec.feed(b"")
    assert (dec.offset, dec.in_frame) == (0, False)
    wu = header(1, 1, 0x09)
    dec.feed(wu[:3])
    assert (dec.offset, dec.in_frame) == (0, True)  # a partial header is not counted yet
    dec.feed(wu[3:])
    assert (dec.offset, dec.in_frame) == (8, False)
    dec.feed(header(1, 10, 0x01))
    assert (dec.offset, dec.in_frame) == (16, True)
    dec.feed(b"0123")
    assert (dec.offset, dec.in_frame) == (20, True)
    dec.feed(b"456789")
    assert (dec.offset, dec.in_frame) == (26, False)
    dec.feed(header(1, 0, 0x11))
    assert (dec.offset, dec.in_frame) == (34, False)
    assert dec.max_frame_size == MAX_VALUE


@pytest.mark.parametrize(
    "wrap",
    [
        bytes,
        bytearray,
        memoryview,
        lambda b: memoryview(b"junk" + b + b"junk")[4:-4],
        lambda b: memoryview(bytearray(b)),
        lambda b: array.array("B", b),
    ],
    ids=["bytes", "bytearray", "memoryview", "memoryview-slice", "bytearray-view", "array"],
)
def test_feed_accepts_bytes_like(impl: Impl, wrap: Callable[[bytes], Any]) -> None:
    stream, expected = frames_stream()
    assert decode(impl, [wrap(stream)]) == expected
    dec, rec = decoder(impl)
    for start in range(0, len(stream), 5):
        dec.feed(wrap(stream[start : start + 5]))
    assert all(type(e[2]) is bytes for e in rec.events if e[0] == "data")


def test_feed_payload_is_a_snapshot(impl: Impl) -> None:
    data = bytearray(header(1, 3, 0x01) + b"abc")
    dec, rec = decoder(impl)
    dec.feed(data)
    data[8:] = b"xyz"
    assert rec.events == [("data", 1, b"abc", False)]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ("text", TypeError),
        (5, TypeError),
        (None, TypeError),
        (memoryview(bytes(16))[::2], BufferError),
    ],
    ids=["str", "int", "none", "non-contiguous"],
)
def test_feed_rejects_non_buffers(impl: Impl, data: Any, error: type[Exception]) -> None:
    dec, rec = decoder(impl)
    with pytest.raises(error):
        dec.feed(data)
    assert (dec.offset, dec.in_frame, rec.events) == (0, False, [])
    dec.feed(header(0, 0, 0x08))  # a rejected argument does not break the decoder
    assert rec.events == [("frame", 0x08, 0, 0)]


def test_feed_errors_identical_across_implementations(both_impls: list[Impl]) -> None:
    for data in ("text", 5, None, memoryview(bytes(16))[::2]):
        seen = set()
        for impl in both_impls:
            dec, _ = decoder(impl)
            with pytest.raises((TypeError, BufferError)) as info:
                dec.feed(data)
            seen.add((type(info.value), str(info.value)))
        assert len(seen) == 1, seen


# --------------------------------------------------------------------------------------------
# Decoder: ``sinks``, DATA routed straight to the receiver of its stream.


class Sink:
    """A receiver in ``sinks``: records what its ``_feed`` gets."""

    def __init__(self, rec: Recorder, stream_id: int) -> None:
        self.rec, self.stream_id = rec, stream_id

    def _feed(self, payload: bytes, end: bool) -> None:
        assert type(payload) is bytes
        self.rec.events.append(("sink", self.stream_id, payload, end))


def test_sinks_take_the_data_of_their_streams(impl: Impl) -> None:
    rec = Recorder()
    sinks: dict[int, Any] = {3: Sink(rec, 3)}
    dec = impl.frame.FrameDecoder(rec.on_data, rec.on_frame, sinks=sinks)
    dec.feed(
        header(3, 2, 0x01)
        + b"ab"  # a sink's stream
        + header(5, 1, 0x11)
        + b"c"  # no sink: on_data
        + header(3, 0, 0x11)  # empty DATA+HFR to the sink
        + header(3, 7, 0x09)  # other frames always go to on_frame
    )
    assert rec.events == [
        ("sink", 3, b"ab", False),
        ("data", 5, b"c", True),
        ("sink", 3, b"", True),
        ("frame", 0x09, 3, 7),
    ]


def test_sinks_are_looked_up_per_frame_and_per_piece(impl: Impl) -> None:
    rec = Recorder()
    sinks: dict[int, Any] = {}
    dec = impl.frame.FrameDecoder(rec.on_data, rec.on_frame, sinks=sinks)
    dec.feed(header(7, 4, 0x11) + b"ab")
    sinks[7] = Sink(rec, 7)  # registered while the payload is in flight
    dec.feed(b"cd")
    del sinks[7]
    dec.feed(header(7, 1, 0x01) + b"e")
    assert rec.events == [
        ("data", 7, b"ab", False),
        ("sink", 7, b"cd", True),
        ("data", 7, b"e", False),
    ]


def test_sinks_take_assembled_payloads_whole(impl: Impl) -> None:
    rec = Recorder()
    dec = impl.frame.FrameDecoder(
        rec.on_data, rec.on_frame, MAX_VALUE, 1024, sinks={1: Sink(rec, 1)}
    )
    dec.feed(header(1, 16, 0x11) + b"x" * 8)
    assert dec.assembling == 16
    dec.feed(b"y" * 8)
    assert rec.events == [("sink", 1, b"x" * 8 + b"y" * 8, True)]


def test_sinks_must_be_a_dict(impl: Impl) -> None:
    with pytest.raises(TypeError, match="sinks must be a dict or None, not list"):
        impl.frame.FrameDecoder(print, print, sinks=[])  # type: ignore[arg-type]


def test_a_failing_sink_propagates(impl: Impl) -> None:
    class Boom(Exception):
        pass

    class Bad:
        def _feed(self, payload: bytes, end: bool) -> None:
            raise Boom

    dec = impl.frame.FrameDecoder(lambda *a: None, lambda *a: None, sinks={1: Bad()})
    with pytest.raises(Boom):
        dec.feed(header(1, 1, 0x01) + b"z")
