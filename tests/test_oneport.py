"""Port 0 on several listening addresses (``host=None``: one socket per address family) gives
every socket the same port, so ``Server.port`` and the readiness lines are right for all."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

import pytest
from session_util import echo

import mio
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


async def test_a_port_taken_on_the_other_family_is_picked_again() -> None:
    """create_on_one_port retries with a fresh port 0 when rebinding the first socket's port
    everywhere fails with EADDRINUSE, and gives up after a few picks."""
    calls: list[int] = []

    class Fake:
        def __init__(self, port: int) -> None:
            self.port = port
            self.closed = False

        @property
        def sockets(self) -> list[Any]:
            if self.port:
                return [_Sock(self.port), _Sock(self.port)]
            return [_Sock(1000 + len(calls)), _Sock(2000 + len(calls))]

        def close(self) -> None:
            self.closed = True

        async def wait_closed(self) -> None:
            pass

    taken = {1001}

    async def create(port: int) -> Any:
        calls.append(port)
        if port in taken:
            raise OSError(errno.EADDRINUSE, "in use")
        return Fake(port)

    server = await create_on_one_port(create, 0)
    assert calls == [0, 1001, 0, 1003]
    assert ports(server) == [1003, 1003]

    taken = set(range(1000, 1100))
    calls.clear()
    with pytest.raises(OSError, match="no port free on every listening address"):
        await create_on_one_port(create, 0)


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


class _Sock:
    def __init__(self, port: int) -> None:
        self.port = port

    def getsockname(self) -> tuple[str, int]:
        return ("0.0.0.0", self.port)


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
