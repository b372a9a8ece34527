"""mio.quic as a benchmark system: mio's stream API over QUIC (aioquic), loopback UDP.

The same application code as ``bench_mio`` (``write`` + ``drain``, ``write_eof``,
``read``/``readexactly``, ``async for chunk in stream``) on :func:`mio.quic.serve` /
:func:`mio.quic.connect`, so the row shows what the transport costs under one API; compare
it with ``mio`` (same API over TCP) and ``quic`` (aioquic driven directly).

Options: the :class:`mio.Config` fields (``--opt mio-quic.FIELD=VALUE``, as for ``mio``) and
``quic_rcvbuf`` (SO_RCVBUF of both UDP sockets, default 4 MiB as for ``quic``). The server's
self-signed certificate is made in memory; the client does not verify it.

Listeners: ``bulk``, ``echo`` and ``mixed`` (W4: stream 0, the client's first bidirectional
stream, is the bulk stream; every other stream is echoed).
"""

from __future__ import annotations

import socket
import zlib
from typing import Any

import mio
import mio.quic

from .. import common as C
from .bench_mio import make_config
from .bench_quic import make_cert

DEFAULT_OPTS: dict[str, Any] = {"quic_rcvbuf": 4 << 20}


def _split(opts: dict[str, Any]) -> tuple[dict[str, Any], mio.Config]:
    ours = C.merge_opts(
        "mio-quic", DEFAULT_OPTS, {k: v for k, v in opts.items() if k in DEFAULT_OPTS}
    )
    config = make_config({k: v for k, v in opts.items() if k not in DEFAULT_OPTS})
    return ours, config


def _set_rcvbuf(sock: socket.socket | None, size: int) -> None:
    if sock is not None and size:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


async def serve(opts: dict[str, Any], stats: dict[str, Any], verify: bool) -> dict[str, int]:
    ours, config = _split(opts)
    cert, key = make_cert()

    async def bulk(stream: mio.quic.QuicStream) -> None:
        n = crc = 0
        async for chunk in stream:
            n += len(chunk)
            if verify:
                crc = zlib.crc32(chunk, crc)
        stats["bulk_bytes"] = stats.get("bulk_bytes", 0) + n
        stream.write(C.ACK.pack(n, crc))
        await stream.drain()

    async def echo(stream: mio.quic.QuicStream) -> None:
        async for chunk in stream:
            stream.write(chunk)
            await stream.drain()

    async def mixed(stream: mio.quic.QuicStream) -> None:
        await (bulk if stream.id == 0 else echo)(stream)

    ports = {}
    for kind, handler in (("bulk", bulk), ("echo", echo), ("mixed", mixed)):
        qconf = mio.quic.make_configuration(is_client=False, config=config)
        qconf.certificate, qconf.private_key = cert, key
        server = await mio.quic.serve(handler, C.HOST, 0, config=config, configuration=qconf)
        _set_rcvbuf(server.sockets[0], ours["quic_rcvbuf"])
        ports[kind] = server.port
    stats["extensions"] = mio.EXTENSIONS_ACTIVE
    return ports


class _Bulk:
    def __init__(self, stream: mio.quic.QuicStream) -> None:
        self._stream = stream

    async def write(self, chunk: bytes) -> None:
        self._stream.write(chunk)
        await self._stream.drain()

    async def finish(self) -> tuple[int, int]:
        s = self._stream
        s.write_eof()
        n, crc = C.ACK.unpack(await s.read())
        return n, crc


class _Echo:
    def __init__(self, stream: mio.quic.QuicStream) -> None:
        self._stream = stream

    async def roundtrip(self, msg: bytes) -> bytes:
        s = self._stream
        s.write(msg)
        await s.drain()
        return await s.readexactly(len(msg))

    async def finish(self) -> bool:
        s = self._stream
        s.write_eof()
        return await s.read() == b""


class Client:
    def __init__(self, ports: dict[str, int], opts: dict[str, Any], variant: str) -> None:
        self._ports = ports
        self._opts, self._config = _split(opts)
        self._session: mio.quic.QuicSession | None = None

    async def connect(self, kind: str) -> None:
        self._session = await mio.quic.connect(
            C.HOST, self._ports[kind], config=self._config, verify=False
        )
        _set_rcvbuf(self._session.get_extra_info("socket"), self._opts["quic_rcvbuf"])

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
        if self._session is None:
            return {}
        conn = self._session.quic
        out: dict[str, Any] = {"streams": self._session.stream_count}
        try:
            out["client_cwnd"] = conn._loss._cc.congestion_window
            out["client_srtt_ms"] = round(conn._loss._rtt_smoothed * 1000, 3)
        except AttributeError:
            pass
        return out
