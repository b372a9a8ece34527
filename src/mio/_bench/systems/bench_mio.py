"""mio as a benchmark system: ``mio.serve`` in the server process, ``mio.connect`` in the client.

Plain public API with the default :class:`mio.Config` (``--opt mio.FIELD=VALUE`` overrides a
field), written the way an application would: ``write`` + ``drain``, ``write_eof`` to
half-close, ``read``/``readexactly``, ``async for chunk in stream``.

Listeners: ``bulk`` (count and acknowledge), ``echo`` (echo every stream until EOF, then the
handler returns and mio closes the stream), ``mixed`` (W4: the session's first stream, id 1,
is a bulk stream, every other stream is echoed).
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import mio

from .. import common as C

DEFAULT_OPTS: dict[str, Any] = {}


def make_config(opts: dict[str, Any]) -> mio.Config:
    fields = {f.name: f for f in dataclasses.fields(mio.Config)}
    changes: dict[str, Any] = {}
    for key, value in opts.items():
        if key not in fields:
            raise ValueError(f"mio option {key!r}: not a mio.Config field ({', '.join(fields)})")
        if value is None or str(value).lower() == "none":
            changes[key] = None
        elif key.endswith(("_timeout", "_interval")):
            changes[key] = float(value)
        else:
            changes[key] = C.to_int(value) if isinstance(value, str) else int(value)
    return mio.Config(**changes)


def ext_check(expect_compiled: bool) -> str | None:
    if expect_compiled != mio.EXTENSIONS_ACTIVE:
        return f"mio.EXTENSIONS_ACTIVE is {mio.EXTENSIONS_ACTIVE}, expected {expect_compiled}"
    return None


async def serve(opts: dict[str, Any], stats: dict[str, Any], verify: bool) -> dict[str, int]:
    config = make_config(opts)

    async def bulk(stream: mio.Stream) -> None:
        n = crc = 0
        async for chunk in stream:
            n += len(chunk)
            if verify:
                crc = zlib.crc32(chunk, crc)
        stats["bulk_bytes"] = stats.get("bulk_bytes", 0) + n
        stream.write(C.ACK.pack(n, crc))
        await stream.drain()

    async def echo(stream: mio.Stream) -> None:
        async for chunk in stream:
            stream.write(chunk)
            await stream.drain()

    async def mixed(stream: mio.Stream) -> None:
        await (bulk if stream.id == 1 else echo)(stream)

    ports = {}
    for kind, handler in (("bulk", bulk), ("echo", echo), ("mixed", mixed)):
        server = await mio.serve(handler, C.HOST, 0, config=config, backlog=1024)
        ports[kind] = server.port
    stats["extensions"] = mio.EXTENSIONS_ACTIVE
    return ports


class _Bulk:
    def __init__(self, stream: mio.Stream) -> None:
        self._stream = stream

    async def write(self, chunk: bytes) -> None:
        self._stream.write(chunk)
        await self._stream.drain()

    async def finish(self) -> tuple[int, int]:
        s = self._stream
        s.write_eof()
        ack = await s.read()
        n, crc = C.ACK.unpack(ack)
        return n, crc


class _Echo:
    def __init__(self, stream: mio.Stream) -> None:
        self._stream = stream

    async def roundtrip(self, msg: bytes) -> bytes:
        s = self._stream
        s.write(msg)
        await s.drain()
        return await s.readexactly(len(msg))

    async def finish(self) -> bool:
        s = self._stream
        s.write_eof()
        rest = await s.read()
        return rest == b""


class Client:
    def __init__(self, ports: dict[str, int], opts: dict[str, Any], variant: str) -> None:
        self._ports = ports
        self._config = make_config(opts)
        self._session: mio.Session | None = None

    async def connect(self, kind: str) -> None:
        self._session = await mio.connect(C.HOST, self._ports[kind], config=self._config)

    async def open_bulk(self) -> _Bulk:
        assert self._session is not None
        return _Bulk(await self._session.open_stream())

    async def request(self, i: int, payload: bytes) -> bytes:
        assert self._session is not None
        s = await self._session.open_stream()
        s.write(payload)
        s.write_eof()
        await s.drain()
        return await s.read()

    async def open_echo(self, i: int) -> _Echo:
        assert self._session is not None
        return _Echo(await self._session.open_stream())

    async def close(self) -> None:
        if self._session is not None:
            self._session.close()
            await self._session.wait_closed()

    def stats(self) -> dict[str, Any]:
        return dict(self._session.stats) if self._session is not None else {}
