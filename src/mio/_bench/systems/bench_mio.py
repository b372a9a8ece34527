"""mio as a benchmark system: ``mio.serve`` in the server process, ``mio.connect`` in the client.

Plain public API with the default :class:`mio.Config` (``--opt mio.FIELD=VALUE`` overrides a
field); the handlers and the client side are ``_streamapi``'s (shared with ``mio-quic``).
W4's bulk stream is the session's first, id 1.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import mio

from .. import common as C
from ._streamapi import StreamApiClient, handlers

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


class EchoProtocol(mio.StreamProtocol):
    """``mio-cb``'s echo: the callback API (no task, no future per stream)."""

    __slots__ = ("stream",)

    def stream_opened(self, stream: mio.Stream) -> None:
        self.stream = stream

    def data_received(self, data: bytes) -> None:
        self.stream.write(data)

    def eof_received(self) -> None:
        self.stream.close()


async def serve(opts: dict[str, Any], stats: dict[str, Any], verify: bool) -> dict[str, int]:
    config = make_config(opts)
    ports = {}
    served: dict[str, Any] = dict(handlers(stats, verify, bulk_id=1))
    served["echo-cb"] = EchoProtocol
    for kind, handler in served.items():
        server = await mio.serve(handler, C.HOST, 0, config=config, backlog=1024)
        ports[kind] = server.port
    stats["extensions"] = mio.EXTENSIONS_ACTIVE
    return ports


class Client(StreamApiClient):
    def __init__(self, ports: dict[str, int], opts: dict[str, Any], variant: str) -> None:
        super().__init__()
        self._ports = ports
        self._config = make_config(opts)
        self._variant = variant
        self._mio: mio.Session | None = None

    async def connect(self, kind: str) -> None:
        if self._variant == "cb" and kind == "echo":
            kind = "echo-cb"  # the server side of mio-cb: a StreamProtocol
        self._session = self._mio = await mio.connect(
            C.HOST, self._ports[kind], config=self._config
        )

    def stats(self) -> dict[str, Any]:
        return dict(self._mio.stats) if self._mio is not None else {}
