"""A small RPC echo service whose transport is a command-line flag: MIO over TCP, or QUIC.

Every call is one stream: the client sends a request (4-byte big-endian length, then the
payload) and half-closes; the server answers with a response framed the same way (here:
the payload echoed) and closes the stream. The service and the client are written once,
against :mod:`mio.abc`; only :func:`listen` and :func:`dial` know the transport.

Run both sides in one process::

    python examples/rpc_echo.py demo --transport mio
    python examples/rpc_echo.py demo --transport quic      # needs mio-mux[quic]

or separately (QUIC needs a certificate; ``demo`` makes a throwaway one)::

    python examples/rpc_echo.py server --transport quic --port 4433 \\
        --certfile cert.pem --keyfile key.pem
    python examples/rpc_echo.py client --transport quic --port 4433 --cafile cert.pem

The server prints ``listening on HOST:PORT`` once it accepts calls and stops on SIGINT or
SIGTERM; the client makes ``--calls`` calls, ``--concurrency`` at a time, checks every
answer and prints ``N calls ok``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import struct
import sys
import tempfile
import time
from typing import Any, Protocol

import mio
import mio.abc

HEADER = struct.Struct("!I")
MAX_MESSAGE = 16 * 1024 * 1024


class Listener(Protocol):
    """What the example needs of ``mio.Server`` and ``mio.quic.QuicServer``."""

    @property
    def port(self) -> int: ...

    def close(self, code: int = ...) -> None: ...

    async def wait_closed(self) -> None: ...


# ---------------------------------------------------------------------- the service
async def read_message(stream: mio.abc.Stream) -> bytes:
    (size,) = HEADER.unpack(await stream.readexactly(HEADER.size))
    if size > MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes is over the {MAX_MESSAGE} limit")
    return await stream.readexactly(size)


def write_message(stream: mio.abc.Stream, payload: bytes) -> None:
    stream.writelines([HEADER.pack(len(payload)), payload])


async def handle_call(stream: mio.abc.Stream) -> None:
    """Server side of one call: the stream is closed when this returns (reset if it raises)."""
    request = await read_message(stream)
    write_message(stream, request)
    await stream.drain()


async def call(session: mio.abc.Session, payload: bytes) -> bytes:
    """Client side of one call, on a stream of its own."""
    async with await session.open_stream() as stream:
        write_message(stream, payload)
        stream.write_eof()
        await stream.drain()
        response = await read_message(stream)
        if await stream.read():
            raise ValueError("the server sent more than one response")
        return response


async def run_calls(session: mio.abc.Session, calls: int, concurrency: int, size: int) -> int:
    """Make ``calls`` calls, ``concurrency`` at a time; return how many were answered right."""
    ok = 0
    next_call = 0

    async def worker() -> None:
        nonlocal ok, next_call
        while next_call < calls:
            i = next_call
            next_call += 1
            payload = i.to_bytes(4, "big") + os.urandom(max(0, size - 4))
            if await call(session, payload) == payload:
                ok += 1

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return ok


# ---------------------------------------------------------------------- transports
async def listen(args: argparse.Namespace) -> Listener:
    if args.transport == "mio":
        return await mio.serve(handle_call, args.host, args.port)
    from mio import quic  # the mio-mux[quic] extra

    if not args.certfile:
        raise SystemExit("--transport quic: the server needs --certfile and --keyfile")
    return await quic.serve(
        handle_call, args.host, args.port, certfile=args.certfile, keyfile=args.keyfile
    )


async def dial(args: argparse.Namespace) -> mio.abc.Session:
    if args.transport == "mio":
        return await mio.connect(args.host, args.port)
    from mio import quic

    return await quic.connect(args.host, args.port, cafile=args.cafile, verify=not args.insecure)


def make_certificate(directory: str) -> tuple[str, str]:
    """A self-signed certificate for localhost/127.0.0.1 (its own CA): ``(certfile, keyfile)``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rpc_echo demo")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certfile = os.path.join(directory, "cert.pem")
    keyfile = os.path.join(directory, "key.pem")
    with open(certfile, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(keyfile, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return certfile, keyfile


# ---------------------------------------------------------------------- modes
async def client_mode(args: argparse.Namespace) -> int:
    session = await dial(args)
    started = time.perf_counter()
    try:
        ok = await run_calls(session, args.calls, args.concurrency, args.size)
    finally:
        await session.aclose()
    elapsed = time.perf_counter() - started
    if ok != args.calls:
        print(f"{args.calls - ok} of {args.calls} calls failed", file=sys.stderr)
        return 1
    print(f"{ok} calls ok ({args.transport}, {ok / elapsed:.0f} calls/s)", flush=True)
    return 0


async def server_mode(args: argparse.Namespace) -> int:
    server = await listen(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            pass
    print(f"listening on {args.host}:{server.port} ({args.transport})", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()
    return 0


async def demo_mode(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        if args.transport == "quic" and not args.certfile:
            args.certfile, args.keyfile = make_certificate(tmp)
            args.cafile = args.cafile or args.certfile
        server = await listen(args)
        args.port = server.port
        try:
            return await client_mode(args)
        finally:
            server.close()
            await server.wait_closed()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("server", "client", "demo"))
    parser.add_argument("--transport", choices=("mio", "quic"), default="mio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (server, demo)")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="request payload bytes")
    parser.add_argument("--certfile", help="QUIC server certificate (PEM)")
    parser.add_argument("--keyfile", help="QUIC server private key (PEM)")
    parser.add_argument("--cafile", help="QUIC client: CA certificate(s) to trust (PEM)")
    parser.add_argument(
        "--insecure", action="store_true", help="QUIC client: skip certificate verification"
    )
    args = parser.parse_args(argv)
    if args.mode == "client" and not args.port:
        parser.error("client mode needs --port")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    modes: dict[str, Any] = {"server": server_mode, "client": client_mode, "demo": demo_mode}
    try:
        return int(asyncio.run(modes[args.mode](args)))
    except KeyboardInterrupt:  # pragma: no cover - interactive use
        return 130


if __name__ == "__main__":
    sys.exit(main())
