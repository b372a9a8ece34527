"""Interoperation with a scripted peer that speaks exactly like the Go reference: OPEN with
window 0xFFFFFF on even ids whatever its role, DATA payloads of at most 128 bytes, one WINDOW
UPDATE per read for exactly the bytes read, streams closed with RST NO_ERROR, the session
closed with FIN without closing the socket. mio, configured with ``max_frame_size=128``,
must never send it an RST (it hangs on any RST) nor a DATA payload over 128 bytes."""

from __future__ import annotations

import asyncio

from session_util import (
    DATA,
    DATA_HFR,
    FIN,
    OPEN,
    REFERENCE_MAX_FRAME,
    REFERENCE_WINDOW,
    RST,
    WINDOW_UPDATE,
    Accepted,
    RawPeer,
    echo,
    eventually,
    raw_server,
    roundtrip,
)

import mio
from mio.wire import ErrorCode

REFERENCE_CONFIG = mio.Config(max_frame_size=REFERENCE_MAX_FRAME)


class ReferencePeer(RawPeer):
    """The Go reference's behaviour, scripted."""

    next_id = 2  # even ids on both sides, as the reference does

    def open_stream(self) -> int:
        sid = self.next_id
        self.next_id += 2
        self.open(sid, REFERENCE_WINDOW)
        return sid

    def ack(self, frame: tuple[int, int, int, bytes]) -> None:
        """One WINDOW UPDATE per read, for exactly the bytes read."""
        sid, _, _, payload = frame
        if payload:
            self.window_update(sid, len(payload))

    async def collect(self, expected: dict[int, int]) -> dict[int, bytes]:
        """Read DATA for several streams until each has ``expected[sid]`` bytes."""
        got = {sid: bytearray() for sid in expected}
        while any(len(got[sid]) < n for sid, n in expected.items()):
            frame = await self.expect([DATA, DATA_HFR])
            self.ack(frame)
            got[frame.sid] += frame.payload
        return {sid: bytes(data) for sid, data in got.items()}

    async def serve_echo(self) -> list[int]:
        """Echo the streams the other side opens until FIN or EOF; return their ids.

        Like a Go ``io.Copy`` echo: when the opener half-closes, echo what is left and
        ``Close()`` the stream (RST NO_ERROR)."""
        opened = []
        while True:
            frame = await self.read_frame()
            if frame is None or frame.kind == FIN:
                return opened
            if frame.kind == OPEN:
                opened.append(frame.sid)
            elif frame.kind in (DATA, DATA_HFR):
                self.ack(frame)
                if frame.payload:
                    self.data(frame.sid, frame.payload)
                if frame.kind == DATA_HFR:
                    self.rst(frame.sid, ErrorCode.NO_ERROR)


def assert_reference_safe(peer: RawPeer) -> None:
    """What mio sent: no RST, DATA payloads within the reference's 128-byte limit."""
    assert not peer.frames(RST), peer.frames(RST)
    assert all(len(f.payload) <= REFERENCE_MAX_FRAME for f in peer.frames(DATA, DATA_HFR))


async def test_reference_opens_streams_to_mio() -> None:
    accepted = Accepted()
    async with await mio.serve(
        echo, "127.0.0.1", 0, config=REFERENCE_CONFIG, session_handler=accepted
    ) as server:
        ref = await ReferencePeer.connect(server.port)
        session = await accepted.get()
        payloads = {}
        for i in range(3):
            sid = ref.open_stream()
            payloads[sid] = bytes([65 + i]) * (1000 + i)
        for sid, payload in payloads.items():
            ref.data(sid, payload)
        got = await ref.collect({sid: len(p) for sid, p in payloads.items()})
        assert got == payloads
        for sid in payloads:
            ref.rst(sid, ErrorCode.NO_ERROR)  # the reference's Close()
        await eventually(lambda: session.stream_count == 0)
        # On the wire, mio answered on the reference's own ids and did nothing else: no
        # OPEN of its own, no window update (3 KiB read of 16 MiB - 1 windows is far below
        # the half-window batching threshold), no half-close or RST of its own.
        assert {f.sid for f in ref.received} == {2, 4, 6}
        assert {f.kind for f in ref.received} == {DATA}

        ref.fin()  # without closing the socket: mio closes the transport
        await ref.read_to_eof()
        await session.wait_closed()
        assert session.close_error is not None
        assert session.close_error.code == 0
        assert_reference_safe(ref)
        assert not ref.frames(FIN)  # a received FIN is not answered
        await ref.close()


async def test_reference_half_closes_then_closes() -> None:
    accepted = Accepted()
    async with await mio.serve(
        echo, "127.0.0.1", 0, config=REFERENCE_CONFIG, session_handler=accepted
    ) as server:
        ref = await ReferencePeer.connect(server.port)
        session = await accepted.get()
        sid = ref.open_stream()
        ref.data(sid, b"q" * 300, hfr=True)
        assert await ref.read_stream(sid) == b"q" * 300  # mio echoes, then half-closes
        await eventually(lambda: session.stream_count == 0)
        ref.rst(sid, ErrorCode.NO_ERROR)  # Close() of an already finished stream
        sid2 = ref.open_stream()  # the session is fine: no RST came back
        ref.data(sid2, b"again", hfr=True)
        assert await ref.read_stream(sid2) == b"again"
        session.close()
        # The last acknowledgements may still be in flight: mio's close can end in a TCP RST
        # (after the FIN frame, which must have arrived).
        await ref.read_to_eof(reset_ok=True)
        assert ref.received[-1].kind == FIN
        assert_reference_safe(ref)
        await ref.close()


async def test_mio_opens_streams_to_reference(loop_kind: str) -> None:
    async with raw_server() as (port, peers):
        client = await mio.connect("127.0.0.1", port, config=REFERENCE_CONFIG)
        ref = await asyncio.wait_for(peers.get(), 10)
        ref.__class__ = ReferencePeer
        serving = asyncio.ensure_future(ref.serve_echo())
        streams = [await client.open_stream() for _ in range(4)]
        payloads = [bytes([97 + i]) * (50 + 400 * i) for i in range(4)]
        # The last stream also reads a 140 KiB echo before half-closing: its reads cross
        # half of mio's 256 KiB window while the peer's direction is still open.
        payloads[3] += b"d" * 140 * 1024
        big = streams[3]
        big.write(payloads[3])
        assert await asyncio.wait_for(big.readexactly(len(payloads[3])), 10) == payloads[3]
        results = await asyncio.gather(
            *(roundtrip(s, p) for s, p in zip(streams, [*payloads[:3], b""], strict=True))
        )
        assert results == [*payloads[:3], b""]  # echo, then end of stream by RST NO_ERROR
        await eventually(lambda: client.stream_count == 0)
        client.close()
        opened = await asyncio.wait_for(serving, 10)
        assert opened == [1, 3, 5, 7]
        opens = ref.frames(OPEN)
        assert all(f.value == client.config.initial_window for f in opens)
        # Window updates are batched (PROTOCOL.md W3), not one per read as the reference
        # does: exactly one, on the stream whose reads crossed half its window, returning
        # at least that half and at most what was read plus the auto-tuning growth.
        half = client.config.initial_window // 2
        growth = client.config.max_window - client.config.initial_window
        updates = ref.frames(WINDOW_UPDATE)
        assert [f.sid for f in updates] == [streams[3].id], updates
        assert half <= updates[0].value <= len(payloads[3]) + growth
        assert_reference_safe(ref)
        assert ref.received[-1].kind == FIN
        await client.wait_closed()


async def test_both_directions_on_one_connection() -> None:
    """The reference, as server, opens even ids to the mio client while mio opens odd ids."""
    async with raw_server() as (port, peers):
        client = await mio.connect("127.0.0.1", port, config=REFERENCE_CONFIG, handler=echo)
        ref = await asyncio.wait_for(peers.get(), 10)
        ref.__class__ = ReferencePeer

        mine = await client.open_stream()
        mine.write(b"from mio " * 40)
        mine.write_eof()
        pushed = {ref.open_stream(): b"from the reference " * 20 for _ in range(2)}
        for sid, payload in pushed.items():
            ref.data(sid, payload)

        want = {sid: len(p) for sid, p in pushed.items()} | {mine.id: 9 * 40}
        got = await ref.collect(want)
        assert got[mine.id] == b"from mio " * 40
        assert all(got[sid] == payload for sid, payload in pushed.items())
        for sid in [*pushed, mine.id]:
            ref.rst(sid, ErrorCode.NO_ERROR)
        assert await mine.read() == b""
        await eventually(lambda: client.stream_count == 0)

        ref.fin()
        await client.wait_closed()
        await ref.read_to_eof()
        assert_reference_safe(ref)
        assert sorted(f.sid for f in ref.frames(OPEN)) == [1]
        # 380 bytes read on each of 2 and 4 (16 MiB - 1 windows) and nothing on 1: below
        # every batching threshold, so mio sent no window update at all (one per read, as
        # the reference does, would show here).
        assert not ref.frames(WINDOW_UPDATE)
        assert {f.kind for f in ref.received} == {OPEN, DATA, DATA_HFR}
