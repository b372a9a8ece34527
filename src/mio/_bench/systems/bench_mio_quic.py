"""mio.quic as a benchmark system: mio's stream API over QUIC (aioquic), loopback UDP.

The same application code as ``bench_mio`` (``_streamapi``'s handlers and client) on
:func:`mio.quic.serve` / :func:`mio.quic.connect`, so the row shows what the transport costs
under one API; compare it with ``mio`` (same API over TCP) and ``quic`` (aioquic driven
directly).

Options: the :class:`mio.Config` fields (``--opt mio-quic.FIELD=VALUE``, as for ``mio``) and
``quic_rcvbuf`` (SO_RCVBUF of both UDP sockets, default 4 MiB as for ``quic``). The server's
self-signed certificate is made in memory; the client does not verify it.

Listeners: ``bulk``, ``echo`` and ``mixed`` (W4: stream 0, the client's first bidirectional
stream, is the bulk stream; every other stream is echoed).
"""

from __future__ import annotations

import socket
from typing import Any

import mio
import mio.quic

from .. import common as C
from ._streamapi import StreamApiClient, handlers
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
    ports = {}
    for kind, handler in handlers(stats, verify, bulk_id=0).items():
        qconf = mio.quic.make_configuration(is_client=False, config=config)
        qconf.certificate, qconf.private_key = cert, key
        server = await mio.quic.serve(handler, C.HOST, 0, config=config, configuration=qconf)
        _set_rcvbuf(server.sockets[0], ours["quic_rcvbuf"])
        ports[kind] = server.port
    stats["extensions"] = mio.EXTENSIONS_ACTIVE
    return ports


class Client(StreamApiClient):
    def __init__(self, ports: dict[str, int], opts: dict[str, Any], variant: str) -> None:
        super().__init__()
        self._ports = ports
        self._opts, self._config = _split(opts)
        self._quic: mio.quic.QuicSession | None = None

    async def connect(self, kind: str) -> None:
        self._session = self._quic = await mio.quic.connect(
            C.HOST, self._ports[kind], config=self._config, verify=False
        )
        _set_rcvbuf(self._quic.get_extra_info("socket"), self._opts["quic_rcvbuf"])

    def stats(self) -> dict[str, Any]:
        if self._quic is None:
            return {}
        conn = self._quic.quic
        out: dict[str, Any] = {"streams": self._quic.stream_count}
        try:
            out["client_cwnd"] = conn._loss._cc.congestion_window
            out["client_srtt_ms"] = round(conn._loss._rtt_smoothed * 1000, 3)
        except AttributeError:
            pass
        return out
