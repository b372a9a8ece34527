"""The transports of the conformance suite: one fixture, three ways to connect two sessions.

``transport`` is parametrized over

* ``tcp``: :func:`mio.serve` / :func:`mio.connect` over loopback TCP;
* ``pipe``: :func:`mio.pipe`, the in-memory transport;
* ``quic``: :func:`mio.quic.serve` / :func:`mio.quic.connect` over loopback UDP, with a
  certificate from a throwaway trustme CA (skipped when aioquic or trustme is missing).

A test opens a connected pair with ``async with transport.pair(config) as (client, server)``
and uses nothing but the :mod:`mio.abc` interfaces. Every test runs on the default asyncio
event loop and on uvloop (the ``loop_kind`` fixture of ``tests/conftest.py``). A behaviour a
transport does not have is declared with ``@pytest.mark.transport_xfail("quic", reason=...)``
(a strict xfail for that transport only); docs/TRANSPORTS.md lists the same differences.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import mio
import mio.abc

TRANSPORTS = ("tcp", "pipe", "quic")
HOST = "127.0.0.1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "transport_xfail(names, reason): strict xfail of a conformance test on those transports",
    )


@dataclasses.dataclass(frozen=True)
class Certs:
    """Files of a throwaway CA and a server certificate for 127.0.0.1/localhost."""

    cafile: str
    certfile: str
    keyfile: str


@pytest.fixture(scope="session")
def quic_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", HOST)
    d: Path = tmp_path_factory.mktemp("quic-certs")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    with (d / "cert.pem").open("wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    return Certs(str(d / "ca.pem"), str(d / "cert.pem"), str(d / "key.pem"))


class Transport:
    """Connects a client session to a server session over one transport."""

    def __init__(self, name: str, certs: Certs | None = None) -> None:
        self.name = name
        self._certs = certs

    def __repr__(self) -> str:
        return f"<Transport {self.name}>"

    @contextlib.asynccontextmanager
    async def pair(
        self, config: mio.Config | None = None
    ) -> AsyncIterator[tuple[mio.abc.Session, mio.abc.Session]]:
        """``(client, server)`` sessions, connected; both closed on exit."""
        if self.name == "pipe":
            client, server = mio.pipe(config)
            try:
                yield client, server
            finally:
                await _close_all(client, server)
            return
        accepted: asyncio.Queue[mio.abc.Session] = asyncio.Queue()

        async def session_handler(session: mio.abc.Session) -> None:
            await accepted.put(session)

        listener: mio.Server | mio_quic.QuicServer
        client_session: mio.abc.Session
        if self.name == "tcp":
            listener = await mio.serve(
                None, HOST, 0, config=config, session_handler=session_handler
            )
            client_session = await mio.connect(HOST, listener.port, config=config)
        else:
            from mio import quic as mio_quic

            certs = self._certs
            assert certs is not None
            listener = await mio_quic.serve(
                None,
                HOST,
                0,
                certfile=certs.certfile,
                keyfile=certs.keyfile,
                config=config,
                session_handler=session_handler,
            )
            client_session = await mio_quic.connect(
                HOST, listener.port, config=config, cafile=certs.cafile
            )
        try:
            server_session = await asyncio.wait_for(accepted.get(), 10)
            try:
                yield client_session, server_session
            finally:
                await _close_all(client_session, server_session)
        finally:
            client_session.close()
            listener.close()
            await asyncio.wait_for(listener.wait_closed(), 10)


async def _close_all(*sessions: mio.abc.Session) -> None:
    for session in sessions:
        session.close()
    await asyncio.wait_for(asyncio.gather(*(s.wait_closed() for s in sessions)), 10)


@pytest.fixture(autouse=True)
def _event_loop_kind(loop_kind: str) -> str:
    """Every conformance test runs on the default asyncio loop and on uvloop."""
    return loop_kind


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> Transport:
    """Each transport in turn (see the module docstring)."""
    name = str(request.param)
    for marker in request.node.iter_markers("transport_xfail"):
        names = marker.args[0]
        if name == names or name in names:
            request.applymarker(pytest.mark.xfail(reason=marker.kwargs["reason"], strict=True))
    if name != "quic":
        return Transport(name)
    if importlib.util.find_spec("aioquic") is None:
        pytest.skip("aioquic is not installed (pip install 'mio-mux[quic]')")
    return Transport(name, request.getfixturevalue("quic_certs"))
