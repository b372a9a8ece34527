"""readuntil()/readline(): linear in the bytes received, with asyncio's limit semantics."""

from __future__ import annotations

import asyncio

import pytest
from session_util import mio_pair

import mio
from mio._readside import LINE_LIMIT

BIG = mio.Config(initial_window=0xFFFFFF, max_window=0xFFFFFF)


async def test_a_long_line_in_small_pieces_is_scanned_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An 8 MB line arriving in 1 KiB pieces: every byte is scanned about once (the old
    code re-joined and re-scanned the whole buffer on every wake-up: ~8000x more)."""
    scanned = 0
    calls = 0
    find = mio.Stream._find

    def counting(self: mio.Stream, separator: bytes, start: int) -> int:
        nonlocal scanned, calls
        scanned += self._size - start
        calls += 1
        return find(self, separator, start)

    monkeypatch.setattr(mio.Stream, "_find", counting)
    size = 8 * 1000 * 1000
    async with mio_pair(None, config=BIG) as (client, server):
        stream = await client.open_stream()
        stream.write(b"a")
        peer = await asyncio.wait_for(server.accept_stream(), 5)
        reader = asyncio.ensure_future(peer.readuntil(b"\n", limit=16 * 1024 * 1024))
        piece = b"a" * 1024
        for _ in range(size // 1024):
            stream.write(piece)
            await stream.drain()
            await asyncio.sleep(0)  # one piece per loop turn: many wake-ups
        stream.write(b"\n")
        line = await asyncio.wait_for(reader, 30)
    assert len(line) == size // 1024 * 1024 + 2
    assert calls > 100  # it did wake up many times
    assert scanned <= 2 * len(line)


async def test_readline_limit_like_asyncio() -> None:
    async with mio_pair(None) as (client, server):
        stream = await client.open_stream()
        stream.write(b"x" * (LINE_LIMIT + 10) + b"\nshort\n")
        peer = await asyncio.wait_for(server.accept_stream(), 5)
        await asyncio.wait_for(peer.readexactly(0), 5)
        while peer.buffered < LINE_LIMIT + 17:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        with pytest.raises(ValueError, match="limit"):
            await peer.readline()
        # The overlong line was discarded up to its newline; the next one reads normally.
        assert await asyncio.wait_for(peer.readline(), 5) == b"short\n"


async def test_readuntil_limit_keeps_the_data() -> None:
    async with mio_pair(None) as (client, server):
        stream = await client.open_stream()
        stream.write(b"0123456789|rest")
        peer = await asyncio.wait_for(server.accept_stream(), 5)
        while peer.buffered < 15:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        with pytest.raises(asyncio.LimitOverrunError) as info:
            await peer.readuntil(b"|", limit=4)
        assert "longer than limit" in str(info.value)
        assert info.value.consumed == 10
        with pytest.raises(asyncio.LimitOverrunError, match="exceed the limit"):
            await peer.readuntil(b"#", limit=8)
        assert peer.buffered == 15  # nothing was consumed
        assert await peer.readuntil(b"|", limit=16) == b"0123456789|"


async def test_separator_across_piece_boundaries() -> None:
    async with mio_pair(None) as (client, server):
        stream = await client.open_stream()
        peer_task = asyncio.ensure_future(server.accept_stream())
        for piece in (b"ab", b"c\r", b"\n", b"de\r", b"\nf"):
            stream.write(piece)
            await stream.drain()
            await asyncio.sleep(0.01)
        stream.write_eof()
        peer = await asyncio.wait_for(peer_task, 5)
        assert await peer.readuntil(b"\r\n") == b"abc\r\n"
        assert await peer.readuntil(b"\r\n") == b"de\r\n"
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await peer.readuntil(b"\r\n")
        assert info.value.partial == b"f"
