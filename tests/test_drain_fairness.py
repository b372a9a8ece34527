"""``drain()`` lets the loop run other tasks at least once per 256 KiB written, even when
neither the window nor the transport makes it wait: a bulk writer cannot starve the other
streams' tasks of its event loop (W4 of the benchmark: RPCs beside a bulk transfer).
"""

from __future__ import annotations

import asyncio

import mio

KiB = 1024
MiB = 1024 * KiB


async def test_a_writer_that_never_waits_still_yields_every_256_kib(loop_kind: str) -> None:
    config = mio.Config(initial_window=8 * MiB, max_window=8 * MiB, write_buffer_high=64 * MiB)
    received = 0

    async def sink(stream: mio.Stream) -> None:
        nonlocal received
        async for chunk in stream:
            received += len(chunk)

    server = await mio.serve(sink, "127.0.0.1", 0, config=config)
    try:
        session = await mio.connect("127.0.0.1", server.port, config=config)
        async with session:
            stream = await session.open_stream()
            ticks = 0
            writing = True

            async def ticker() -> None:
                nonlocal ticks
                while writing:
                    ticks += 1
                    await asyncio.sleep(0)

            task = asyncio.get_running_loop().create_task(ticker())
            await asyncio.sleep(0)  # the ticker is running
            ticks = 0
            chunk = b"x" * (64 * KiB)
            for _ in range(64):  # 4 MiB, all within the window and the transport's buffer
                stream.write(chunk)
                await stream.drain()
            writing = False
            await task
            # 4 MiB / 256 KiB = 16 yields at least (more if the transport made it wait)
            assert ticks >= 15, f"the other task ran {ticks} times while 4 MiB were written"
            stream.write_eof()
            await asyncio.wait_for(stream.wait_closed(), 10)
    finally:
        server.close()
        await server.wait_closed()
    assert received == 4 * MiB
