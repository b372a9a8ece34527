"""Port 0 on several listening addresses (``host=None``: one socket per address family) gives
every socket the same port, so ``Server.port`` and the readiness lines are right for all."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from typing import Any

import pytest
from session_util import echo, roundtrip

import mio
from mio import _oneport as oneport
from mio._oneport import create_on_one_port

HAS_IPV6 = socket.has_ipv6
try:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as _s:
        _s.bind(("::1", 0))
except OSError:
    HAS_IPV6 = False

needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback here")


def ports(server: Any) -> list[int]:
    return [s.getsockname()[1] for s in server.sockets]


@needs_ipv6
async def test_asyncio_itself_picks_a_port_per_family() -> None:
    """What this guards against (if asyncio ever stops doing it, the fix is moot, not wrong)."""
    server = await asyncio.get_running_loop().create_server(asyncio.Protocol, None, 0)
    try:
        assert len(server.sockets) == 2
    finally:
        server.close()


@needs_ipv6
async def test_mio_serve_on_every_address_with_port_0_uses_one_port(loop_kind: str) -> None:
    server = await mio.serve(echo, None, 0)
    try:
        assert len(server.sockets) == 2
        assert len(set(ports(server))) == 1
        for host in ("127.0.0.1", "::1"):  # server.port reaches both families
            session = await mio.connect(host, server.port)
            session.close()
            await session.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


def open_fds() -> int:
    """Sockets this process holds (uvloop opens /dev/null once on first use: not counted)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:  # the listing's own fd, closed by now
            pass
    return count


async def echo_once(port: int) -> None:
    """One stream through an echo server on 127.0.0.1:``port``."""
    session = await mio.connect("127.0.0.1", port)
    try:
        stream = await session.open_stream()
        assert await roundtrip(stream, b"ping") == b"ping"
    finally:
        session.close()
        await session.wait_closed()


@needs_ipv6
async def test_a_port_taken_between_probe_and_bind_is_picked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A port free when probed but taken when the server binds it (a race with another
    process): create_on_one_port picks again; a pick that never works ends in a clear error,
    with every socket closed."""
    loop = asyncio.get_running_loop()
    blocker = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    blocker.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    blocker.bind(("::", 0))
    blocker.listen(1)
    busy = blocker.getsockname()[1]
    real_probe = oneport._probe
    picks = iter([busy])
    monkeypatch.setattr(oneport, "_probe", lambda a, p: next(picks, None) or real_probe(a, p))
    calls: list[int | None] = []

    async def create(port: int | None) -> Any:
        calls.append(port)
        return await loop.create_server(asyncio.Protocol, None, port)

    before = open_fds()
    try:
        server = await create_on_one_port(create, 0)
        try:
            assert calls[:3] == [0, busy, 0]
            assert len(calls) == 4
            assert len(set(ports(server))) == 1
            assert ports(server)[0] == calls[3] != busy
        finally:
            server.close()
            await server.wait_closed()
        monkeypatch.setattr(oneport, "_probe", lambda a, p: 0)  # never a port free
        with pytest.raises(OSError, match="no port free on every listening address"):
            await create_on_one_port(create, 0)
        assert open_fds() == before
    finally:
        blocker.close()


async def test_two_addresses_of_one_family_keep_a_port_each(loop_kind: str) -> None:
    """["0.0.0.0", "127.0.0.1"] cannot share a port (the wildcard covers the other: the
    second listen() fails): each keeps the port the kernel gave it, both serve, and closing
    the server leaves no socket listening."""
    before = open_fds()
    server = await mio.serve(echo, ["0.0.0.0", "127.0.0.1"], 0)
    listening = ports(server)
    try:
        assert len(listening) == 2
        assert None not in server.sockets
        for port in listening:
            await echo_once(port)
    finally:
        server.close()
        await server.wait_closed()
    assert open_fds() == before
    for port in listening:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)


async def test_serve_on_a_socket_the_caller_bound(loop_kind: str) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = await mio.serve(echo, sock=sock)
    try:
        assert server.port == port
        await echo_once(port)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_given_port_is_bound_once() -> None:
    calls: list[int] = []

    async def create(port: int) -> Any:
        calls.append(port)
        return await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", port)

    server = await create_on_one_port(create, 0)
    port = ports(server)[0]
    server.close()
    server = await create_on_one_port(create, port)
    server.close()
    assert calls == [0, port]


@needs_ipv6
async def test_relay_on_every_address_with_port_0_uses_one_port_per_listener() -> None:
    from mio.tunnel.relay import Relay, RelayOptions

    relay = Relay(
        RelayOptions(
            host=None,
            port=0,
            publics=[("web", None, 0)],
            secret=b"k" * 16,
            keepalive=None,
            ws_host=None,
            ws_port=0,
        )
    )
    try:
        await relay.start()
    except ImportError:  # --ws-listen needs the websockets extra
        pytest.skip("websockets is not installed")
    try:
        for server in (*relay._listeners, relay._public_ports["web"]):
            assert len(server.sockets) == 2
            assert len(set(ports(server))) == 1
        assert relay.port() == ports(relay._listeners[0])[0]
        assert relay.ws_port() == ports(relay._listeners[1])[0]
        for host in ("127.0.0.1", "::1"):  # the public port answers on both families
            _, writer = await asyncio.open_connection(host, relay.port("web"))
            writer.close()
    finally:
        await relay.shutdown(0)


async def test_a_failing_probe_closes_the_first_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error probing for a common port (no socket left: EMFILE, an address gone) closes
    the server made on port 0 before it propagates: nothing is left listening."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.Server] = []
    listening: list[int] = []

    async def create(port: int | None) -> Any:
        made.append(await loop.create_server(asyncio.Protocol, None, port))
        listening.append(len(made[-1].sockets))
        return made[-1]

    def probe(addresses: Any, port: int) -> int:
        raise OSError(errno.EMFILE, "too many open files")

    monkeypatch.setattr(oneport, "_probe", probe)
    before = open_fds()
    with pytest.raises(OSError, match="too many open files"):
        await create_on_one_port(create, 0)
    if listening[0] < 2:
        pytest.skip("one address family here: no common port to probe for")
    assert not made[0].is_serving()
    assert open_fds() == before


async def test_start_serving_that_cannot_listen_everywhere_accepts_nowhere(
    loop_kind: str,
) -> None:
    """serve(..., start_serving=False) on a wildcard and a specific address of one family
    with one fixed port: start_serving() fails on the second listen(), naming the address,
    and the first address does not go on accepting."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = await mio.serve(echo, ["0.0.0.0", "127.0.0.1"], port, start_serving=False)
    try:
        with pytest.raises(OSError, match=r"cannot listen on ") as info:
            await server.start_serving()
        assert info.value.errno == errno.EADDRINUSE
        assert not server.is_serving()
        # uvloop's server is closed (refused); a socket that did listen on asyncio's own
        # loop queues the connection, but nobody serves it
        try:
            session = await mio.connect("127.0.0.1", port)
        except ConnectionRefusedError:
            return
        try:
            stream = await session.open_stream()
            stream.write(b"ping")
            stream.write_eof()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stream.read(), 0.3)
        finally:
            session.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_fixed_port_that_cannot_listen_everywhere_fails_cleanly(loop_kind: str) -> None:
    """One fixed port on a wildcard and a specific address of one family: serve() raises
    EADDRINUSE on both loops (uvloop only marks the socket that failed listen()) and leaves
    no socket behind."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    before = open_fds()
    with pytest.raises(OSError, match="cannot listen on") as info:
        await mio.serve(echo, ["0.0.0.0", "127.0.0.1"], port)
    assert info.value.errno == errno.EADDRINUSE
    assert open_fds() == before
