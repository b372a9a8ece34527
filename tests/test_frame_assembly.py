"""The decoder's payload assembly (``assemble_max``): payloads that straddle transport reads
are delivered whole, and a transport can read the rest of one straight into it.

Every test runs against the compiled module and its pure-Python twin (the ``impl`` fixture).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import pytest

from mio.wire import MAX_VALUE

if TYPE_CHECKING:
    from conftest import Impl

DATA, DATA_HFR, WINDOW_UPDATE = 0x01, 0x11, 0x09


def header(stream_id: int, value: int, flags: int) -> bytes:
    return stream_id.to_bytes(4, "big") + value.to_bytes(3, "big") + bytes([flags])


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_data(self, stream_id: int, payload: bytes, end: bool) -> None:
        assert type(payload) is bytes
        self.events.append(("data", stream_id, payload, end))

    def on_frame(self, kind: int, stream_id: int, value: int) -> None:
        self.events.append(("frame", kind, stream_id, value))


def make(impl: Impl, assemble_max: int) -> tuple[Any, Recorder]:
    rec = Recorder()
    return impl.frame.FrameDecoder(rec.on_data, rec.on_frame, MAX_VALUE, assemble_max), rec


def test_default_is_off_and_delivers_pieces(impl: Impl) -> None:
    rec = Recorder()
    dec = impl.frame.FrameDecoder(rec.on_data, rec.on_frame)
    assert dec.assemble_max == 0
    payload = bytes(range(200))
    dec.feed(header(1, 200, DATA) + payload[:150])
    assert dec.assembling == 0
    assert dec.payload_buffer() is None
    dec.feed(payload[150:])
    assert rec.events == [("data", 1, payload[:150], False), ("data", 1, payload[150:], False)]


@pytest.mark.parametrize("flags", [DATA, DATA_HFR])
def test_straddling_payload_is_delivered_whole(impl: Impl, flags: int) -> None:
    dec, rec = make(impl, 1024)
    payload = bytes(range(256)) * 4
    dec.feed(header(3, 1024, flags) + payload[:300])
    assert rec.events == []  # held until complete
    assert dec.assembling == 1024
    assert dec.in_frame
    dec.feed(payload[300:700])
    dec.feed(payload[700:] + header(3, 5, WINDOW_UPDATE))
    assert rec.events == [("data", 3, payload, flags == DATA_HFR), ("frame", WINDOW_UPDATE, 3, 5)]
    assert dec.assembling == 0
    assert not dec.in_frame
    assert dec.offset == 8 + 1024 + 8


def test_read_straight_into_the_payload(impl: Impl) -> None:
    """What Session.get_buffer/buffer_updated do: the kernel writes into payload_buffer()."""
    dec, rec = make(impl, 4096)
    payload = random.Random(7).randbytes(4096)
    dec.feed(header(5, 4096, DATA_HFR) + payload[:1000])
    view = dec.payload_buffer()
    assert view is not None
    assert len(view) == 3096
    assert not view.readonly
    view[:2000] = payload[1000:3000]  # a recv_into that got 2000 bytes
    dec.payload_filled(2000)
    assert rec.events == []
    assert dec.offset == 8 + 3000
    view = dec.payload_buffer()
    assert view is not None
    assert len(view) == 1096
    view[:] = payload[3000:]
    del view
    dec.payload_filled(1096)
    assert rec.events == [("data", 5, payload, True)]
    assert dec.payload_buffer() is None
    assert dec.assembling == 0


def test_delivered_payload_is_not_changed_by_a_stale_view(impl: Impl) -> None:
    """The buffer handed out covers only the unfilled part: bytes already delivered or
    filled are never in it."""
    dec, rec = make(impl, 64)
    dec.feed(header(1, 64, DATA) + b"a" * 16)
    view = dec.payload_buffer()
    assert view is not None
    assert len(view) == 48
    view[:] = b"b" * 48
    dec.payload_filled(48)
    assert rec.events == [("data", 1, b"a" * 16 + b"b" * 48, False)]


def test_whole_payloads_in_one_chunk_are_not_assembled(impl: Impl) -> None:
    dec, rec = make(impl, 1024)
    dec.feed(header(1, 100, DATA) + b"x" * 100 + header(1, 50, DATA))
    assert dec.assembling == 0  # the second has none of its payload here: under an eighth
    assert rec.events == [("data", 1, b"x" * 100, False)]


def test_a_peer_cannot_make_it_allocate_more_than_8x_what_it_sent(impl: Impl) -> None:
    """A header alone, or under an eighth of the payload, allocates nothing: the payload
    comes in pieces as without assembly."""
    dec, rec = make(impl, 65536)
    dec.feed(header(1, 65536, DATA) + b"y" * (65536 // 8 - 1))
    assert dec.assembling == 0
    assert dec.payload_buffer() is None
    assert rec.events == [("data", 1, b"y" * (65536 // 8 - 1), False)]
    dec2, _ = make(impl, 65536)
    dec2.feed(header(1, 65536, DATA) + b"y" * (65536 // 8))
    assert dec2.assembling == 65536


def test_payloads_above_assemble_max_come_in_pieces(impl: Impl) -> None:
    dec, rec = make(impl, 100)
    dec.feed(header(1, 101, DATA) + b"z" * 60)
    assert dec.assembling == 0
    dec.feed(b"z" * 41)
    assert [e[2] for e in rec.events] == [b"z" * 60, b"z" * 41]


def test_payload_filled_checks_its_argument(impl: Impl) -> None:
    dec, _ = make(impl, 64)
    with pytest.raises(ValueError, match="without a payload buffer"):
        dec.payload_filled(1)
    dec.feed(header(1, 64, DATA) + b"a" * 16)
    with pytest.raises(ValueError, match="without a payload buffer"):
        dec.payload_filled(49)
    with pytest.raises(ValueError, match="without a payload buffer"):
        dec.payload_filled(-1)
    assert dec.assembling == 64  # unchanged by the rejected calls


@pytest.mark.parametrize("bad", [-1, MAX_VALUE + 1])
def test_assemble_max_range(impl: Impl, bad: int) -> None:
    with pytest.raises(ValueError, match="assemble_max"):
        impl.frame.FrameDecoder(print, print, MAX_VALUE, bad)
    with pytest.raises(TypeError):
        impl.frame.FrameDecoder(print, print, MAX_VALUE, 1.5)


def test_random_splits_give_the_same_payloads_as_whole_feeds(impl: Impl) -> None:
    """Any split of a stream of frames, fed or read into payload buffers, delivers the
    same bytes per stream."""
    rng = random.Random(11)
    frames = []
    expect: dict[int, bytes] = {}
    for i in range(60):
        sid = 1 + 2 * (i % 3)
        size = rng.choice([0, 1, 7, 100, 4000, 20000])
        payload = rng.randbytes(size)
        frames.append(header(sid, size, DATA) + payload)
        expect[sid] = expect.get(sid, b"") + payload
    wire = b"".join(frames)
    for trial in range(20):
        dec, rec = make(impl, 8192)
        pos = 0
        while pos < len(wire):
            view = dec.payload_buffer()
            n = rng.randint(1, 9000)
            if view is not None and trial % 2:
                n = min(n, len(view))
                view[:n] = wire[pos : pos + n]
                del view
                dec.payload_filled(n)
            else:
                del view
                dec.feed(wire[pos : pos + n])
            pos += n
        assert not dec.in_frame
        got: dict[int, bytes] = {}
        for _, sid, payload, _end in rec.events:
            got[sid] = got.get(sid, b"") + payload
        assert got == expect
        assert dec.offset == len(wire)
