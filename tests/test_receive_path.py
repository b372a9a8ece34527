"""The session's receive path on real sockets: a DATA payload that straddles transport
reads is read straight into one buffer, counted whole in the memory account while it
arrives, and reaches the reader in one piece; small or tiny-headed ones are not.

Runs on both event loops (``loop_kind``) and both codecs (the suite runs twice).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import ssl

from _rawpeer import WAIT, RawPeer, h, open_

import mio
from mio._frame_py import KIND_DATA as DATA

KiB = 1024


async def _until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def _serve() -> tuple[mio.Server, asyncio.Queue[mio.Stream]]:
    accepted: asyncio.Queue[mio.Stream] = asyncio.Queue()
    done = asyncio.Event()

    async def handler(stream: mio.Stream) -> None:
        accepted.put_nowait(stream)
        await done.wait()

    server = await mio.serve(handler, "127.0.0.1", 0)
    server._test_done = done  # type: ignore[attr-defined]
    return server, accepted


async def test_straddling_payload_is_counted_whole_and_read_whole(loop_kind: str) -> None:
    server, accepted = await _serve()
    peer = await RawPeer.connect(server.port)
    try:
        payload = random.Random(3).randbytes(64 * KiB)
        peer.writer.write(open_(1) + h(1, len(payload), DATA) + payload[: 10 * KiB])
        await peer.writer.drain()
        stream = await asyncio.wait_for(accepted.get(), WAIT)
        (session,) = server.sessions
        # 10 KiB arrived (over an eighth): the whole 64 KiB payload is allocated and counted
        await _until(lambda: session.memory["inbound"] == 64 * KiB, "the payload to be counted")
        assert stream.buffered == 0  # nothing delivered yet
        for a, b in ((10, 30), (30, 31), (31, 64)):  # the rest, in pieces
            peer.writer.write(payload[a * KiB : b * KiB])
            await peer.writer.drain()
        await _until(lambda: stream.buffered == 64 * KiB, "the payload to arrive")
        assert session.memory["inbound"] == 64 * KiB  # now held by the stream, not twice
        chunk = await stream.read(1 << 20)
        assert len(chunk) == 64 * KiB
        assert chunk == payload
        assert session.memory["inbound"] == 0
    finally:
        server._test_done.set()  # type: ignore[attr-defined]
        peer.writer.close()
        server.close()
        await server.wait_closed()


async def test_a_header_alone_allocates_nothing(loop_kind: str) -> None:
    """Under an eighth of a payload arrived: only what arrived is held (a peer cannot make
    the session allocate more than 8x what it sent)."""
    server, accepted = await _serve()
    peer = await RawPeer.connect(server.port)
    try:
        peer.writer.write(open_(1) + h(1, 64 * KiB, DATA) + b"x" * (4 * KiB))
        await peer.writer.drain()
        stream = await asyncio.wait_for(accepted.get(), WAIT)
        (session,) = server.sessions
        await _until(lambda: stream.buffered == 4 * KiB, "the first piece")
        assert session.memory["inbound"] == 4 * KiB
    finally:
        server._test_done.set()  # type: ignore[attr-defined]
        peer.writer.close()
        server.close()
        await server.wait_closed()


async def test_bulk_over_tcp_and_tls_is_intact(
    loop_kind: str, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """8 MiB in 64 KiB writes (every frame straddles some read) over TCP and TLS: the
    bytes and their order survive the payload buffers."""
    server_ctx, client_ctx = tls
    data = random.Random(5).randbytes(8 << 20)
    digests: list[str] = []
    for ssl_server, ssl_client in ((None, None), (server_ctx, client_ctx)):
        digests.clear()

        async def sink(stream: mio.Stream) -> None:
            hasher = hashlib.sha256()
            async for piece in stream:
                hasher.update(piece)
            digests.append(hasher.hexdigest())
            await stream.send(b"ok")

        server = await mio.serve(sink, "127.0.0.1", 0, ssl=ssl_server)
        try:
            session = await mio.connect("127.0.0.1", server.port, ssl=ssl_client)
            async with session:
                stream = await session.open_stream()
                view = memoryview(data)
                for i in range(0, len(data), 64 * KiB):
                    stream.write(view[i : i + 64 * KiB])
                    await stream.drain()
                stream.write_eof()
                assert await asyncio.wait_for(stream.read(), WAIT) == b"ok"
            assert digests == [hashlib.sha256(data).hexdigest()]
        finally:
            server.close()
            await server.wait_closed()
