"""Property tests of the frame codec (hypothesis).

* encode -> decode round trip of random frame sequences, with each implementation's encoders;
* any split of the byte stream into chunks decodes to the same frames;
* differential: on random bytes and on mutated valid streams, the compiled module and the twin
  report the same events and the same error (type, message, offset, flags, stream id).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mio
from mio.wire import MAX_STREAM_ID, MAX_VALUE

if TYPE_CHECKING:
    from conftest import Impl

# ``impl``/``both_impls`` are session-scoped: no function-scoped fixture health check.
SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

Event = tuple[Any, ...]
Frame = tuple[Any, ...]  # ("data", sid, payload, hfr) or ("frame", kind, sid, value)

OPEN, DATA, DATA_HFR, WINDOW_UPDATE, RST, SESSION_WINDOW_UPDATE, FIN = (
    0x0C,
    0x01,
    0x11,
    0x09,
    0x04,
    0x08,
    0x02,
)

stream_ids = st.one_of(st.sampled_from([1, 2, 3, MAX_STREAM_ID]), st.integers(1, MAX_STREAM_ID))
values = st.one_of(st.sampled_from([0, 1, MAX_VALUE]), st.integers(0, MAX_VALUE))
payloads = st.binary(max_size=300)

frame_specs: st.SearchStrategy[Frame] = st.one_of(
    st.tuples(st.just("frame"), st.sampled_from([OPEN, WINDOW_UPDATE, RST]), stream_ids, values),
    st.tuples(st.just("frame"), st.sampled_from([SESSION_WINDOW_UPDATE, FIN]), st.just(0), values),
    st.tuples(st.just("data"), stream_ids, payloads, st.booleans()),
)
frame_lists = st.lists(frame_specs, max_size=12)


def header(stream_id: int, value: int, flags: int) -> bytes:
    return stream_id.to_bytes(4, "big") + value.to_bytes(3, "big") + bytes([flags])


def reference_encode(frame: Frame) -> bytes:
    """Encode without the codec under test."""
    if frame[0] == "data":
        _, sid, payload, hfr = frame
        return header(sid, len(payload), DATA_HFR if hfr else DATA) + bytes(payload)
    _, kind, sid, value = frame
    return header(sid, value, kind)


def impl_encode(f: Any, frame: Frame, buf: bytearray, use_append: bool) -> None:
    """Encode one frame with the implementation's encoders (each kind through its own)."""
    if frame[0] == "data":
        _, sid, payload, hfr = frame
        if not payload and not hfr:
            pieces = [f.pack_header(sid, 0, f.KIND_DATA)]  # encode_data gives nothing here
        elif use_append:
            f.append_data(buf, sid, payload, MAX_VALUE, hfr)
            return
        else:
            pieces = f.encode_data(sid, payload, hfr=hfr)
        for piece in pieces:
            buf += piece
        return
    _, kind, sid, value = frame
    if use_append:
        f.append_frame(buf, sid, value, kind)
        return
    if kind == OPEN:
        buf += f.encode_open(sid, value)
    elif kind == WINDOW_UPDATE:
        buf += f.encode_window_update(sid, value)
    elif kind == RST:
        buf += f.encode_rst(sid, value)
    elif kind == SESSION_WINDOW_UPDATE:
        buf += f.encode_session_window_update(value)
    else:
        buf += f.encode_fin(value)


class FrameJoiner:
    """Decoder callbacks that join each DATA frame's pieces into one event."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.pieces: list[bytes] = []
        self.decoder: Any = None

    def on_data(self, stream_id: int, payload: bytes, end: bool) -> None:
        self.pieces.append(payload)
        if self.decoder.in_frame:  # more pieces of this frame to come
            assert not end
            return
        self.events.append(("data", stream_id, b"".join(self.pieces), end))
        self.pieces = []

    def on_frame(self, kind: int, stream_id: int, value: int) -> None:
        assert not self.pieces
        self.events.append(("frame", kind, stream_id, value))


def decode_joined(impl: Impl, chunks: list[bytes], max_frame_size: int = MAX_VALUE) -> list[Event]:
    rec = FrameJoiner()
    dec = rec.decoder = impl.frame.FrameDecoder(rec.on_data, rec.on_frame, max_frame_size)
    for chunk in chunks:
        dec.feed(chunk)
    assert not dec.in_frame
    assert dec.offset == sum(len(c) for c in chunks)
    return rec.events


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(points)]


# --------------------------------------------------------------------------------------------
# Round trips.


@SETTINGS
@given(frames=frame_lists, use_append=st.booleans())
def test_round_trip(impl: Impl, frames: list[Frame], use_append: bool) -> None:
    buf = bytearray()
    for frame in frames:
        impl_encode(impl.frame, frame, buf, use_append)
    assert bytes(buf) == b"".join(reference_encode(f) for f in frames)
    assert decode_joined(impl, [bytes(buf)]) == frames


@SETTINGS
@given(
    stream_id=stream_ids,
    data=st.binary(max_size=2000),
    max_frame_size=st.one_of(st.integers(1, 64), st.integers(1, MAX_VALUE)),
    hfr=st.booleans(),
)
def test_encode_data_round_trip(
    impl: Impl, stream_id: int, data: bytes, max_frame_size: int, hfr: bool
) -> None:
    pieces = impl.frame.encode_data(stream_id, data, max_frame_size, hfr)
    stream = b"".join(pieces)
    buf = bytearray()
    impl.frame.append_data(buf, stream_id, data, max_frame_size, hfr)
    assert buf == stream
    events = decode_joined(impl, [stream], max_frame_size)  # no frame exceeds the limit
    expected_frames = -(-len(data) // max_frame_size) if data else (1 if hfr else 0)
    assert len(events) == expected_frames
    assert all(e[0] == "data" and e[1] == stream_id for e in events)
    assert all(len(e[2]) == min(max_frame_size, len(data)) for e in events[:-1])
    assert b"".join(e[2] for e in events) == data
    assert [e[3] for e in events] == [False] * (len(events) - 1) + [hfr] * bool(events)


@SETTINGS
@given(frames=frame_lists, data=st.data())
def test_any_split_decodes_the_same(impl: Impl, frames: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(reference_encode(f) for f in frames)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30), label="cuts")
    assert decode_joined(impl, split(stream, cuts)) == frames


# --------------------------------------------------------------------------------------------
# Differential: both implementations, same events and same errors on any input.


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    stream = bytearray(b"".join(reference_encode(f) for f in draw(frame_lists)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["set", "flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, len(stream)))
        if op == "insert":
            stream[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "truncate":
            del stream[pos:]
        elif pos < len(stream):
            if op == "set":
                stream[pos] = draw(st.integers(0, 255))
            elif op == "flip":
                stream[pos] ^= 1 << draw(st.integers(0, 7))
            else:
                del stream[pos : pos + draw(st.integers(1, 8))]
    return bytes(stream)


def run(impl: Impl, chunks: list[bytes], max_frame_size: int) -> tuple[Any, ...]:
    """Everything observable from feeding ``chunks``: events, error, state, later feeds."""
    events: list[Event] = []
    dec: Any = None
    dec = impl.frame.FrameDecoder(
        lambda sid, payload, end: events.append(("data", sid, payload, end, dec.in_frame)),
        lambda kind, sid, value: events.append(("frame", kind, sid, value, dec.offset)),
        max_frame_size,
    )
    error: tuple[Any, ...] | None = None
    states = []
    for chunk in chunks:
        try:
            dec.feed(chunk)
        except mio.FrameError as exc:
            error = (type(exc), str(exc), exc.offset, exc.flags, exc.stream_id, exc.args)
            break
        states.append((dec.offset, dec.in_frame))
    after = None
    if error is not None:
        try:
            dec.feed(b"\x00\x00\x00\x00\x00\x00\x00\x08")
        except mio.FrameError as exc:
            after = (type(exc), str(exc))
    return events, error, states, after, dec.offset, dec.in_frame


def check_same(both_impls: list[Impl], stream: bytes, cuts: list[int], mfs: int) -> None:
    chunks = split(stream, cuts)
    results = [run(impl, chunks, mfs) for impl in both_impls]
    for impl, result in zip(both_impls[1:], results[1:], strict=True):
        assert result == results[0], f"{impl.name} differs from {both_impls[0].name}"
    _, error, _, after, _, _ = results[0]
    if error is not None:
        assert after == error[:2]  # a broken decoder keeps raising the same error


max_frame_sizes = st.one_of(st.sampled_from([1, 8, 100, MAX_VALUE]), st.integers(1, MAX_VALUE))


@SETTINGS
@given(stream=st.binary(max_size=300), mfs=max_frame_sizes, data=st.data())
def test_differential_random_bytes(
    both_impls: list[Impl], stream: bytes, mfs: int, data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10), label="cuts")
    check_same(both_impls, stream, cuts, mfs)


@SETTINGS
@given(stream=mutated_streams(), mfs=max_frame_sizes, data=st.data())
def test_differential_mutated_streams(
    both_impls: list[Impl], stream: bytes, mfs: int, data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10), label="cuts")
    check_same(both_impls, stream, cuts, mfs)


# Mostly the ids and flags that matter (stream 0 or not, the kinds, reserved bits), some noise.
header_words = st.one_of(
    st.sampled_from([0, 1, 0x80000000, 0x80000001, 0x7FFFFFFF, 0xFFFFFFFF]),
    st.integers(0, 0xFFFFFFFF),
)
header_flags = st.one_of(
    st.builds(
        int.__or__,
        st.sampled_from([OPEN, DATA, DATA_HFR, WINDOW_UPDATE, RST, SESSION_WINDOW_UPDATE, FIN]),
        st.sampled_from([0, 0x20, 0x40, 0x80, 0xE0]),
    ),
    st.integers(0, 255),
)


@SETTINGS
@given(
    headers=st.lists(st.tuples(header_words, st.integers(0, 40), header_flags), max_size=6),
    mfs=st.integers(1, 50),
    data=st.data(),
)
def test_differential_random_headers(
    both_impls: list[Impl], headers: list[tuple[int, int, int]], mfs: int, data: st.DataObject
) -> None:
    # Random headers with small payloads: reaches every error kind, not just "not a kind".
    stream = b"".join(
        header_raw(word, value, flags) + bytes(value if flags & 0x01 else 0)
        for word, value, flags in headers
    )
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10), label="cuts")
    check_same(both_impls, stream, cuts, mfs)


def header_raw(word: int, value: int, flags: int) -> bytes:
    return word.to_bytes(4, "big") + value.to_bytes(3, "big") + bytes([flags])
