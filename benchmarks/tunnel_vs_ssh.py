"""`mio tunnel` against `ssh -R` (and direct TCP), all on 127.0.0.1.

Not part of the test suite. It installs nothing: it uses Debian's ``openssh-server``
(``/usr/sbin/sshd``), ``openssh-client`` (``ssh``, ``ssh-keygen``) and ``iperf3`` when they
are on the machine and skips what is missing (``apt-get install openssh-server iperf3``).
Keys, host key, certificates and configuration are made in a temporary directory at start;
sshd listens on 127.0.0.1 only, with that directory's ``authorized_keys``.

From one run it reports, per system (direct TCP, ``ssh -R``, ``mio tunnel`` plain and TLS):

(a) one connection's bulk throughput, MB/s (iperf3, else a Python sender);
(b) the aggregate of 8 and of 100 concurrent connections, MB/s;
(c) new connections per second, each a 1 KB request and a 1 KB response, 16 clients, and
    the CPU time the tunnel's processes (relay + agent, or sshd + ssh) spent per connection
    meanwhile, µs: what the rate would be bound by on a machine where the tunnel has the
    cores to itself (this script's own client and echo service share them here);
(d) resident memory of the tunnel's processes (relay + agent, or sshd + ssh) per idle
    tunneled connection, KiB, at 1000 connections.

Below the table it prints each figure's *ceiling*: direct TCP ÷ ``ssh -R`` in the same run.
No tunnel moves bytes or sets up connections faster than no tunnel through the same client,
so a target of "N x ssh -R" above that ceiling cannot be met on the machine of the run. The
client is one Python process; ``--client-loop uvloop`` runs it (and the echo service) on
uvloop, which costs it less CPU per connection and so raises the (c) ceiling.

Usage::

    python benchmarks/tunnel_vs_ssh.py            # 5 s per measurement
    python benchmarks/tunnel_vs_ssh.py --quick    # 1 s each, 200 idle connections for (d)
    python benchmarks/tunnel_vs_ssh.py --json results.json
    python benchmarks/tunnel_vs_ssh.py --client-loop uvloop --systems direct,ssh,tls

Loopback numbers on a shared machine are indicative only: run it on an idle host.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def family(pid: int) -> list[int]:
    """``pid`` and all its descendants (sshd forks per session)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` and all its descendants."""
    total = 0
    for p in family(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants, reaped children included."""
    total = 0
    for p in family(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # after the ")" of the command name: utime is the 12th field, then stime,
            # cutime, cstime
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


async def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port} after {timeout} s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


# ------------------------------------------------------------------ services
async def start_services() -> tuple[asyncio.Server, int, int]:
    """An echo service and a sink (reads everything, answers the byte count at EOF)."""

    # CancelledError: handlers still open when the run ends (asyncio 3.11 would log them).
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            total = 0
            while data := await reader.read(1 << 20):
                total += len(data)
            writer.write(total.to_bytes(8, "big"))
            await writer.drain()
            writer.close()

    echo_server = await asyncio.start_server(echo, HOST, 0)
    sink_server = await asyncio.start_server(sink, HOST, 0)
    return (
        echo_server,
        echo_server.sockets[0].getsockname()[1],
        sink_server.sockets[0].getsockname()[1],
    )


# ------------------------------------------------------------------ systems
class System:
    """A way to reach the services: ``ports`` maps service port -> the port to dial."""

    name = "?"

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: dict[int, int] = {}

    async def start(self, service_ports: list[int]) -> None:
        raise NotImplementedError

    def tunnel_pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.work / f"{self.name}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            list(args), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


class Direct(System):
    name = "direct TCP"

    async def start(self, service_ports: list[int]) -> None:
        self.ports = {p: p for p in service_ports}


def prepare_sshd(work: Path, port: int) -> tuple[Path, Path]:
    """A client key, a host key, authorized_keys and an sshd_config for 127.0.0.1:port."""
    key, host_key = work / "id_ed25519", work / "host_ed25519"
    for path in (key, host_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    (work / "authorized_keys").write_text((work / "id_ed25519.pub").read_text())
    config = work / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress {HOST}\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {work / 'authorized_keys'}\nStrictModes no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "AllowTcpForwarding yes\nPidFile none\nMaxSessions 200\nMaxStartups 200\n"
    )
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        os.makedirs("/run/sshd", mode=0o755)  # sshd's privilege separation directory
    return key, config


def make_certificate(work: Path) -> tuple[Path, Path]:
    cert, key = work / "relay.crt", work / "relay.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=relay", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def have_ssh() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh") is not None


def start_iperf(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["iperf3", "-s", "-p", str(port), "-B", HOST],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


class SshR(System):
    name = "ssh -R"

    async def start(self, service_ports: list[int]) -> None:
        port = free_port()
        key, config = prepare_sshd(self.work, port)
        self.spawn(SSHD, "-D", "-e", "-f", str(config))
        await wait_port(port)
        forwards: list[str] = []
        for service in service_ports:
            public = free_port()
            self.ports[service] = public
            forwards += ["-R", f"{HOST}:{public}:{HOST}:{service}"]
        self.spawn(
            "ssh", "-N", "-p", str(port), "-i", str(key), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "ExitOnForwardFailure=yes",
            "-o", "LogLevel=ERROR", *forwards, f"{os.environ.get('USER', 'root')}@{HOST}",
        )  # fmt: skip
        for public in self.ports.values():
            await wait_port(public)


class MioTunnel(System):
    def __init__(self, work: Path, tls: bool, loop: str = "asyncio") -> None:
        super().__init__(work)
        self.tls = tls
        self.loop = loop
        self.name = ("mio tunnel TLS" if tls else "mio tunnel plain") + (
            f" ({loop})" if loop != "asyncio" else ""
        )

    async def start(self, service_ports: list[int]) -> None:
        env = {**os.environ, "MIO_TUNNEL_SECRET": os.urandom(16).hex()}
        cli = [sys.executable, "-m", "mio.tunnel.cli"]
        listen = free_port()
        relay_args = ["--listen", f"{HOST}:{listen}", "-q", "--idle-timeout", "0"]
        relay_args += ["--loop", self.loop]
        relay_args += ["--max-connections", "5000", "--max-source-connections", "5000"]
        relay_args += ["--max-port-connections", "5000"]
        agent_tls: list[str] = []
        if self.tls:
            cert, key = make_certificate(self.work)
            relay_args += ["--tls-cert", str(cert), "--tls-key", str(key)]
            from mio.tunnel.tls import certificate_digest, format_fingerprint

            agent_tls = ["--tls-fingerprint", format_fingerprint(certificate_digest(str(cert)))]
        for service in service_ports:
            public = free_port()
            self.ports[service] = public
            relay_args += ["--public", f"s{service}={HOST}:{public}"]
        self.spawn(*cli, "relay", *relay_args, env=env)
        await wait_port(listen)
        services = [a for s in service_ports for a in ("--service", f"s{s}={HOST}:{s}")]
        self.spawn(
            *cli,
            "agent",
            "--relay",
            f"{HOST}:{listen}",
            *services,
            *agent_tls,
            "-q",
            "--loop",
            self.loop,
            env=env,
        )
        await echo_once(self.ports[service_ports[0]])  # the first service is the echo one


async def echo_once(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"x")
            if await asyncio.wait_for(reader.read(1), 2) == b"x":
                writer.close()
                return
            writer.close()
        except (TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} does not echo")
        await asyncio.sleep(0.1)


# ------------------------------------------------------------------ measurements
async def bulk_python(port: int, streams: int, seconds: float) -> float:
    """Aggregate MB/s of ``streams`` senders writing for ``seconds`` to the sink."""
    chunk = b"\0" * (256 * 1024)

    async def one() -> int:
        reader, writer = await asyncio.open_connection(HOST, port)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        count = int.from_bytes(await reader.readexactly(8), "big")
        writer.close()
        return count

    start = time.monotonic()
    total = sum(await asyncio.gather(*(one() for _ in range(streams))))
    return total / (time.monotonic() - start) / 1e6


def bulk_iperf(port: int, streams: int, seconds: float) -> float:
    """Aggregate MB/s of an iperf3 run with ``streams`` parallel connections."""
    for _ in range(20):
        done = subprocess.run(
            ["iperf3", "-c", HOST, "-p", str(port), "-P", str(streams), "-t", str(seconds),
             "-J"],
            capture_output=True, text=True, timeout=seconds + 60, check=False,
        )  # fmt: skip
        result = json.loads(done.stdout or "{}")
        if "error" not in result and "sum_received" in result.get("end", {}):
            return float(result["end"]["sum_received"]["bits_per_second"]) / 8 / 1e6
        time.sleep(0.5)  # "the server is busy running a test": the previous one is ending
    raise RuntimeError(f"iperf3 failed: {result.get('error', done.stderr)}")


async def connections_per_second(port: int, clients: int, seconds: float) -> tuple[float, int]:
    """Connections per second and connections made."""
    request = os.urandom(1024)

    async def client() -> int:
        done = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(request)
            writer.write_eof()
            got = await reader.readexactly(len(request))
            assert got == request
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            done += 1
        return done

    start = time.monotonic()
    total = sum(await asyncio.gather(*(client() for _ in range(clients))))
    return total / (time.monotonic() - start), total


async def idle_rss(system: System, port: int, count: int) -> float:
    """KiB of the tunnel's processes per idle tunneled connection, at ``count``."""
    before = sum(rss_kib(pid) for pid in system.tunnel_pids())
    held = []
    gate = asyncio.Semaphore(64)

    async def open_one() -> asyncio.StreamWriter:
        async with gate:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"p")
            await asyncio.wait_for(reader.readexactly(1), 30)
            return writer

    held = await asyncio.gather(*(open_one() for _ in range(count)))
    await asyncio.sleep(1.0)
    after = sum(rss_kib(pid) for pid in system.tunnel_pids())
    for writer in held:
        writer.close()
    return (after - before) / count if system.tunnel_pids() else 0.0


@contextlib.asynccontextmanager
async def iperf_server() -> AsyncIterator[int | None]:
    if shutil.which("iperf3") is None:
        yield None
        return
    port = free_port()
    proc = start_iperf(port)
    try:
        await wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    seconds = 1.0 if args.quick else args.seconds
    idle = 200 if args.quick else 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8 * idle)), hard))
    rows = []
    echo_server, echo_port, sink_port = await start_services()
    async with iperf_server() as iperf_port:
        with tempfile.TemporaryDirectory(prefix="tunnel-vs-ssh-") as tmp:
            work = Path(tmp)
            makers: list[tuple[str, Callable[[], System]]] = [
                ("direct", lambda: Direct(work)),
                ("ssh", lambda: SshR(work)),
                ("plain", lambda: MioTunnel(work, tls=False)),
                ("tls", lambda: MioTunnel(work, tls=True)),
                ("plain-uvloop", lambda: MioTunnel(work, tls=False, loop="uvloop")),
                ("tls-uvloop", lambda: MioTunnel(work, tls=True, loop="uvloop")),
            ]
            for key, make in makers:
                if key not in args.systems:
                    continue
                if key == "ssh" and not have_ssh():
                    print("skipping ssh -R: openssh-server/openssh-client missing", file=sys.stderr)
                    continue
                if key.endswith("-uvloop") and importlib.util.find_spec("uvloop") is None:
                    print(f"skipping {key}: uvloop is not installed", file=sys.stderr)
                    continue
                system = make()
                targets = [echo_port, sink_port] + ([iperf_port] if iperf_port else [])
                try:
                    await system.start(targets)
                    row: dict[str, Any] = {"system": system.name}
                    if iperf_port:
                        port = system.ports[iperf_port]
                        row["tool"] = "iperf3"
                        for field, n in (("a_MBps", 1), ("b8_MBps", 8), ("b100_MBps", 100)):
                            row[field] = await asyncio.to_thread(bulk_iperf, port, n, seconds)
                    else:
                        row["tool"] = "python"
                        sink = system.ports[sink_port]
                        row["a_MBps"] = await bulk_python(sink, 1, seconds)
                        row["b8_MBps"] = await bulk_python(sink, 8, seconds)
                        row["b100_MBps"] = await bulk_python(sink, 100, seconds)
                    cpu0 = sum(cpu_s(pid) for pid in system.tunnel_pids())
                    own0 = time.process_time()
                    row["c_conn_per_s"], made = await connections_per_second(
                        system.ports[echo_port], 16, seconds
                    )
                    cpu = sum(cpu_s(pid) for pid in system.tunnel_pids()) - cpu0
                    row["c_tunnel_cpu_us_per_conn"] = (
                        round(cpu / made * 1e6, 1) if system.procs and made else None
                    )
                    row["c_harness_cpu_us_per_conn"] = (
                        round((time.process_time() - own0) / made * 1e6, 1) if made else None
                    )
                    row["d_KiB_per_conn"] = (
                        await idle_rss(system, system.ports[echo_port], idle)
                        if system.procs
                        else None
                    )
                    row["d_connections"] = idle
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr)
                finally:
                    system.stop()
    echo_server.close()
    return rows


#: The figures compared with ``ssh -R``: (row key, label).
FIGURES = (
    ("a_MBps", "(a) 1 conn"),
    ("b8_MBps", "(b) 8 conns"),
    ("b100_MBps", "(b) 100 conns"),
    ("c_conn_per_s", "(c) conn/s"),
)


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of ``rows``."""

    def fmt(value: Any, digits: int = 0) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    lines = [
        "| system | (a) 1 conn MB/s | (b) 8 conns MB/s | (b) 100 conns MB/s "
        "| (c) conn/s (1 KB) | (c) tunnel CPU µs/conn | (c) client CPU µs/conn "
        "| (d) KiB per idle conn |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['system']} | {fmt(r['a_MBps'])} | {fmt(r['b8_MBps'])} | "
            f"{fmt(r['b100_MBps'])} | {fmt(r['c_conn_per_s'])} | "
            f"{fmt(r.get('c_tunnel_cpu_us_per_conn'))} | "
            f"{fmt(r.get('c_harness_cpu_us_per_conn'))} | {fmt(r['d_KiB_per_conn'], 1)} |"
        )
    return "\n".join(lines)


def ceilings(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Direct TCP ÷ ``ssh -R`` per figure (empty without both rows): the most any tunnel
    could reach against ``ssh -R`` through this client on this machine."""
    by_name = {r["system"]: r for r in rows}
    direct, ssh = by_name.get(Direct.name), by_name.get(SshR.name)
    if direct is None or ssh is None:
        return {}
    return {key: direct[key] / ssh[key] for key, _ in FIGURES if direct[key] and ssh[key]}


def ratios(rows: list[dict[str, Any]]) -> str:
    """Each tunnel's figures ÷ ``ssh -R``'s, and the ceilings, as Markdown lines."""
    ssh = next((r for r in rows if r["system"] == SshR.name), None)
    if ssh is None:
        return ""
    lines = []
    for r in rows:
        if r["system"] in (Direct.name, SshR.name):
            continue
        parts = [f"{label} {r[key] / ssh[key]:.2f}x" for key, label in FIGURES if ssh[key]]
        lines.append(f"- {r['system']} ÷ ssh -R: " + ", ".join(parts))
    limits = ceilings(rows)
    if limits:
        parts = [f"{label} {limits[key]:.2f}x" for key, label in FIGURES if key in limits]
        lines.append("- ceiling (direct TCP ÷ ssh -R, no tunnel can beat it): " + ", ".join(parts))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (5)")
    parser.add_argument("--quick", action="store_true", help="1 s each, 200 idle connections")
    parser.add_argument(
        "--systems",
        default="direct,ssh,plain,tls,plain-uvloop,tls-uvloop",
        type=lambda t: t.split(","),
        help="comma-separated subset of direct,ssh,plain,tls,plain-uvloop,tls-uvloop (the "
        "uvloop rows need uvloop installed)",
    )
    parser.add_argument("--json", type=Path, help="write the rows as JSON to this file")
    parser.add_argument(
        "--client-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop of this script's client and services (asyncio)",
    )
    args = parser.parse_args()
    if args.client_loop == "uvloop":
        import uvloop

        rows = uvloop.run(run(args))
    else:
        rows = asyncio.run(run(args))
    print(table(rows))
    print()
    print(f"client loop: {args.client_loop}")
    print(ratios(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
