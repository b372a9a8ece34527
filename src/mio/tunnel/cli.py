"""The ``tunnel`` command line: ``relay``, ``agent`` and ``forward``.

The top-level ``mio`` command calls :func:`add_parser` to add ``mio tunnel``; until then, and
for tests, ``python -m mio.tunnel.cli relay|agent|forward ...`` runs the same commands.
Every sub-command's parser sets ``func``: a callable taking the parsed arguments and
returning the process exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import logging
import socket
import ssl
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from .. import _clikit
from .._allocator import MMAP_THRESHOLD, TOP_PAD, tune_allocator
from .addr import format_address, parse_hostport, parse_named, validate_name
from .agent import Agent, AgentOptions
from .auth import SECRET_ENV, load_secret
from .config import ConfigError, defer_defaults
from .config import load as load_config
from .config import merge as merge_config
from .forward import Forwarder, ForwardOptions
from .lifecycle import announce, install_signal_handlers, on_sighup
from .link import EXIT_AUTH, LinkOptions
from .metrics import Metric, serve_metrics
from .metrics import render as render_metrics
from .relay import ListenError, Relay, RelayOptions
from .tls import (
    certificate_digest,
    dialer_context,
    format_fingerprint,
    parse_fingerprint,
    proxy_context,
    relay_context,
)
from .wsaddr import DEFAULT_PATH, RelayURL, choose_proxy, parse_relay_url

__all__ = ("add_parser", "build_parser", "main", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_AUTH")

log = logging.getLogger("mio.tunnel")

EXIT_OK = _clikit.EXIT_OK
EXIT_ERROR = _clikit.EXIT_ERROR
EXIT_USAGE = _clikit.EXIT_USAGE

_EXIT_STATUS = f"""\
exit status:
  0  stopped by SIGINT/SIGTERM after the graceful shutdown
  1  runtime error (e.g. cannot listen on an address)
  2  bad command line or configuration (secret, certificate files), or TLS on one side
     of the link only (agent and forward do not retry then)
  {EXIT_AUTH}  authentication failed: wrong secret, or the relay's certificate is not
     trusted or does not match --tls-fingerprint (agent and forward do not retry then)
"""

_SECRET_HELP = f"""\
shared secret:
  Every relay, agent and forwarder of a tunnel shares one secret. Give it as a file with
  --secret-file (surrounding whitespace ignored; keep it chmod 600) or in the environment
  variable {SECRET_ENV}; never on the command line. Make one with
  `openssl rand -hex 32 > tunnel.secret`. Authentication is a mutual HMAC-SHA256
  challenge-response bound to the relay's TLS certificate; the secret is never sent.
"""

_SHUTDOWN_HELP = """\
shutdown:
  SIGINT or SIGTERM stops accepting new connections, lets tunneled connections finish for
  up to --grace seconds, resets the rest and closes the sessions; a second signal skips
  the rest of the grace period.
"""

_TUNNEL_DESCRIPTION = """\
A secure reverse tunnel for NAT traversal over one multiplexed mio connection.

An agent runs next to services that cannot be reached from outside (behind a NAT or a
firewall). It dials a relay that can be reached, authenticates with a shared secret and
keeps that one connection up, redialing with backoff when it drops. The relay listens on
public ports; every TCP connection to one is carried as a stream over the agent's
connection to a local service next to the agent, half-close included. A forwarder is the
reverse (ssh -L style) direction: it listens locally and reaches an agent's service
through the relay.
"""

_RELAY_EPILOG = f"""\
example (on the public host):
  openssl rand -hex 32 > tunnel.secret; chmod 600 tunnel.secret
  mio tunnel relay --listen 0.0.0.0:7000 --public web=0.0.0.0:8080 \\
      --secret-file tunnel.secret --tls-cert relay.crt --tls-key relay.key

  Agents then run `mio tunnel agent --relay relay.example.com:7000 --service
  web=127.0.0.1:80 ...`, and connections to port 8080 reach their port 80.

readiness lines on stdout (one per listening socket; port 0 shows the chosen port):
  relay tls-fingerprint sha256:HEX      (with --tls-cert: pin it with --tls-fingerprint)
  relay listening on HOST:PORT
  public NAME on HOST:PORT

{_SECRET_HELP}
{_SHUTDOWN_HELP}
{_EXIT_STATUS}"""

_AGENT_EPILOG = f"""\
example (next to the service, behind the NAT):
  mio tunnel agent --relay relay.example.com:7000 --service web=127.0.0.1:80 \\
      --secret-file tunnel.secret --tls-ca ca.pem

  Every name the agent serves can be reached by forwarders; names the relay lists with
  --public can also be reached on the relay's public ports. Agents serving the same name
  share it: new connections go to each in turn, and one leaving leaves the others serving.

readiness line on stdout, after every successful (re)connection:
  agent connected to HOST:PORT
  agent connected to wss://HOST:PORT/PATH via the proxy http://HOST:PORT   (WebSocket)

through an HTTP proxy: --relay wss://relay.example.com/mio-tunnel (the relay's
--ws-listen) with --proxy http[s]://[USER:PASSWORD@]HOST:PORT, or $HTTPS_PROXY for wss://
($HTTP_PROXY for ws://) unless $NO_PROXY lists the relay's host or --no-proxy is given.

TLS: --tls-ca verifies the relay's certificate against a CA file (and the host name, or
--server-name); --tls-fingerprint pins the relay's certificate by its SHA-256 (printed by
the relay at startup, or `openssl x509 -in relay.crt -noout -fingerprint -sha256`) and
works with self-signed certificates; both together check both; --tls alone uses the
system's trusted CAs. Without any of them the link is plain TCP: authentication still
works but tunneled data is not encrypted.

reconnection: after a failed attempt or a lost session the agent waits a random time in
[d/2, d], d = min(--backoff-max, --backoff-initial * 2^n) for the n-th consecutive
failure; a session that stayed up for 10 s resets n.

{_SECRET_HELP}
{_SHUTDOWN_HELP}
{_EXIT_STATUS}"""

_FORWARD_EPILOG = f"""\
example (anywhere that can reach the relay):
  mio tunnel forward --listen 127.0.0.1:5432 --relay relay.example.com:7000 --to db \\
      --secret-file tunnel.secret --tls-fingerprint sha256:...

  Local connections to 127.0.0.1:5432 reach the service `db` of the agent that serves it,
  whether or not the relay makes `db` public.

readiness lines on stdout:
  forward listening on HOST:PORT
  forward connected to HOST:PORT        (after every successful (re)connection)

{_SECRET_HELP}
{_SHUTDOWN_HELP}
{_EXIT_STATUS}"""


# ---------------------------------------------------------------------- argument types
_arg_type = _clikit.arg_type
_hostport = _arg_type(parse_hostport, "HOST:PORT")


def _parse_relay(text: str) -> tuple[str | None, int] | RelayURL:
    if "://" in text:
        return parse_relay_url(text)
    return parse_hostport(text)


_relay = _arg_type(_parse_relay, "HOST:PORT or ws[s]://HOST[:PORT][/PATH]")
_listen_hostport = _arg_type(lambda t: parse_hostport(t, listen=True), "HOST:PORT")
_named = _arg_type(parse_named, "NAME=HOST:PORT")
_listen_named = _arg_type(lambda t: parse_named(t, listen=True), "NAME=HOST:PORT")
_name = _arg_type(validate_name, "NAME")
_fingerprint = _arg_type(parse_fingerprint, "SHA256")
_secs = _arg_type(lambda t: _clikit.parse_seconds(t, positive=True), "SECONDS")
_secs0 = _arg_type(_clikit.parse_seconds, "SECONDS")
_count = _arg_type(lambda t: _clikit.parse_count(t, minimum=1), "N")
_size = _arg_type(_clikit.parse_size, "BYTES")


# ---------------------------------------------------------------------- parsers
class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _metrics_address(text: str) -> tuple[str | None, int]:
    if text.strip().isdigit():  # a bare port: loopback
        return "127.0.0.1", _clikit.parse_count(text.strip())
    return parse_hostport(text, listen=True)


def _add_metrics(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics",
        type=_arg_type(_metrics_address, "[HOST:]PORT"),
        metavar="[HOST:]PORT",
        help="serve Prometheus text metrics at http://HOST:PORT/metrics; a bare PORT binds "
        "127.0.0.1 (the endpoint has no authentication: keep it local)",
    )


async def _start_metrics(
    args: argparse.Namespace, metrics: Callable[[], list[Metric]]
) -> asyncio.Server | None:
    """The metrics endpoint of ``--metrics``; raises ListenError naming the address."""
    if args.metrics is None:
        return None
    host, port = args.metrics
    try:
        return await serve_metrics(host, port, lambda: render_metrics(metrics()))
    except OSError as exc:
        where = format_address((host or "", port))
        raise ListenError(exc.errno, f"--metrics {where}: cannot listen: {exc.strerror}") from exc


def _announce_metrics(server: asyncio.Server | None) -> None:
    if server is not None:
        for sock in server.sockets:
            announce(f"metrics on http://{format_address(sock.getsockname())}/metrics")


async def _stop_metrics(server: asyncio.Server | None) -> None:
    if server is not None:
        server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 1.0)


def _add_common(parser: argparse.ArgumentParser, idle_default: float = 0.0) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="read options and services from this TOML file (see docs/TUNNEL.md); flags "
        "given here override it; SIGHUP reloads its services",
    )
    group = parser.add_argument_group("authentication and timeouts")
    group.add_argument(
        "--secret-file",
        metavar="PATH",
        help=f"file holding the shared secret (default: the {SECRET_ENV} environment "
        "variable); refused when its group or others may access it",
    )
    group.add_argument(
        "--insecure-secret-file",
        action="store_true",
        help="use --secret-file even when its group or others may access it (a warning)",
    )
    group.add_argument(
        "--auth-timeout",
        type=_secs,
        default=10.0,
        metavar="SECONDS",
        help="time allowed to connect and authenticate; the relay drops peers that have not "
        "authenticated by then (default: %(default)g)",
    )
    group.add_argument(
        "--idle-timeout",
        type=_secs0,
        default=idle_default,
        metavar="SECONDS",
        help="reset a tunneled connection that moved fewer than --idle-min-bytes (both "
        "directions together) in an interval of this many seconds: a quiet connection goes "
        "between 1 and 2 intervals after it went quiet; 0 disables (default: %(default)g)",
    )
    group.add_argument(
        "--idle-min-bytes",
        type=_size,
        default=1024 if idle_default else 1,
        metavar="BYTES",
        help="bytes a connection must move per --idle-timeout interval, so that a trickle "
        "cannot keep it open (default: %(default)s)",
    )
    group.add_argument(
        "--keepalive",
        type=_secs0,
        default=15.0,
        metavar="SECONDS",
        help="send a keepalive on the relay link after this long without traffic; a link "
        "silent for 3 times as long is considered dead (the agent then reconnects); use the "
        "same value on relay and agents; 0 disables (default: %(default)g)",
    )
    group.add_argument(
        "--grace",
        type=_secs0,
        default=10.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, how long open connections may finish (default: %(default)g)",
    )
    _clikit.add_loop_argument(group)
    _clikit.add_logging_arguments(
        parser,
        title="output",
        verbose_help="log more: -v every connection, -vv also mio protocol details",
    )


def _add_dialer(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("relay link")
    group.add_argument(
        "--relay",
        required=True,
        type=_relay,
        metavar="ADDRESS",
        help="the relay (required): HOST:PORT of its --listen port, or the URL "
        f"ws://HOST[:PORT][/PATH] or wss://... of its --ws-listen (path {DEFAULT_PATH} if "
        "none is given; wss:// trusts the system's CAs unless --tls-ca/--tls-fingerprint)",
    )
    group.add_argument(
        "--proxy",
        metavar="URL",
        help="reach a ws:// or wss:// relay through this HTTP proxy (CONNECT): "
        "http://[USER:PASSWORD@]HOST[:PORT], or https://... for a proxy reached over TLS "
        "(default: $HTTPS_PROXY for wss://, $HTTP_PROXY for ws://, unless $NO_PROXY lists "
        "the relay's host)",
    )
    group.add_argument(
        "--proxy-ca",
        metavar="FILE",
        help="PEM CA certificates an https:// proxy's certificate must chain to (default: "
        "the system's trusted CAs)",
    )
    group.add_argument(
        "--no-proxy",
        action="store_true",
        help="ignore $HTTPS_PROXY/$HTTP_PROXY: connect to the relay directly",
    )
    group.add_argument(
        "--name",
        default=socket.gethostname()[:64],
        metavar="NAME",
        help="name shown in the relay's log (default: this host's name, %(default)s)",
    )
    group.add_argument(
        "--tls", action="store_true", help="use TLS, trusting the system's CA certificates"
    )
    group.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="use TLS; the relay's certificate must be issued by a CA in this PEM file",
    )
    group.add_argument(
        "--tls-fingerprint",
        type=_fingerprint,
        metavar="SHA256",
        help="use TLS; the relay's certificate must have this SHA-256 fingerprint "
        "(64 hex digits, colons and a sha256: prefix allowed)",
    )
    group.add_argument(
        "--server-name",
        metavar="NAME",
        help="host name to expect in the relay's certificate and to send as SNI "
        "(default: the --relay host)",
    )
    group.add_argument(
        "--backoff-initial",
        type=_secs,
        default=0.5,
        metavar="SECONDS",
        help="first reconnection delay (default: %(default)g)",
    )
    group.add_argument(
        "--backoff-max",
        type=_secs,
        default=30.0,
        metavar="SECONDS",
        help="longest reconnection delay (default: %(default)g)",
    )


def _add_commands(subparsers: Any, prefix: str) -> None:
    relay = subparsers.add_parser(
        "relay",
        help="accept agents and expose their services on public ports",
        description="Run the relay: the reachable end of the tunnel. Agents and forwarders\n"
        "connect to --listen; every TCP connection to a --public port is carried to the\n"
        "agent that serves that name.",
        epilog=_RELAY_EPILOG.replace("mio tunnel", prefix),
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    group = relay.add_argument_group("listening")
    group.add_argument(
        "--listen",
        required=True,
        type=_listen_hostport,
        metavar="HOST:PORT",
        help="where agents and forwarders connect (required; ':PORT' for every interface, "
        "port 0 picks a free port)",
    )
    group.add_argument(
        "--public",
        action="append",
        default=[],
        type=_listen_named,
        metavar="NAME=HOST:PORT",
        help="listen on HOST:PORT and carry its connections to the service NAME of an agent; "
        "repeat for more services",
    )
    group.add_argument(
        "--ws-listen",
        type=_listen_hostport,
        metavar="HOST:PORT",
        help="also accept agents and forwarders over WebSocket here (for those behind an "
        "HTTP proxy): ws://, or wss:// with --tls-cert; same secret, limits and timeouts",
    )
    group.add_argument(
        "--ws-path",
        default=DEFAULT_PATH,
        metavar="PATH",
        help="the HTTP path of --ws-listen; other paths get 404 (default: %(default)s)",
    )
    group.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve TLS on --listen (and --ws-listen) with this PEM certificate (chain); "
        "strongly advised",
    )
    group.add_argument(
        "--tls-key", metavar="FILE", help="PEM private key of --tls-cert (default: in that file)"
    )
    limits = relay.add_argument_group("limits (connections over a limit are reset at once)")
    limits.add_argument(
        "--max-connections",
        type=_count,
        default=256,
        metavar="N",
        help="tunneled connections at once per agent; more are closed (default: %(default)s)",
    )
    limits.add_argument(
        "--max-port-connections",
        type=_count,
        default=1024,
        metavar="N",
        help="connections at once per public port (default: %(default)s)",
    )
    limits.add_argument(
        "--max-source-connections",
        type=_count,
        default=64,
        metavar="N",
        help="public connections at once per source address, over all public ports "
        "(default: %(default)s)",
    )
    limits.add_argument(
        "--max-pending",
        type=_count,
        default=64,
        metavar="N",
        help="connections on --listen that are not authenticated yet (TLS handshake "
        "included), at once (default: %(default)s)",
    )
    limits.add_argument(
        "--max-pending-per-source",
        type=_count,
        default=8,
        metavar="N",
        help="the same, per source address (default: %(default)s)",
    )
    limits.add_argument(
        "--auth-failures",
        type=_count,
        default=5,
        metavar="N",
        help="failed authentications a source address may have per --auth-failure-window; "
        "then its connections are refused until the window ends (default: %(default)s)",
    )
    limits.add_argument(
        "--auth-failure-window",
        type=_secs,
        default=60.0,
        metavar="SECONDS",
        help="see --auth-failures (default: %(default)g)",
    )
    limits.add_argument(
        "--open-timeout",
        type=_secs,
        default=15.0,
        metavar="SECONDS",
        help="how long the agent may take to connect to its service before the public "
        "connection is closed (default: %(default)g)",
    )
    _add_metrics(relay)
    _add_common(relay, idle_default=300.0)
    relay.set_defaults(func=run_relay, _tunnel_parser=relay)
    defer_defaults(relay)

    agent = subparsers.add_parser(
        "agent",
        help="serve local services through a relay",
        description="Run an agent: dial the relay, authenticate, register the --service names\n"
        "and connect every tunneled connection the relay sends to the local service. The\n"
        "connection to the relay is redialed with backoff whenever it drops.",
        epilog=_AGENT_EPILOG.replace("mio tunnel", prefix),
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    group = agent.add_argument_group("services")
    group.add_argument(
        "--service",
        action="append",
        required=True,
        type=_named,
        metavar="NAME=HOST:PORT",
        help="serve NAME by connecting to HOST:PORT (from the agent's host); repeat for "
        "more services (at least one)",
    )
    group.add_argument(
        "--connect-timeout",
        type=_secs,
        default=5.0,
        metavar="SECONDS",
        help="time allowed to connect to a service; on failure the tunneled connection is "
        "closed and the link stays up (default: %(default)g)",
    )
    _add_dialer(agent)
    _add_metrics(agent)
    _add_common(agent)
    agent.set_defaults(func=run_agent, _tunnel_parser=agent)
    defer_defaults(agent)

    forward = subparsers.add_parser(
        "forward",
        help="reach an agent's service through the relay (ssh -L style)",
        description="Run a forwarder: listen on --listen and carry every connection through\n"
        "the relay to the service --to of the agent serving it (ssh -L style).",
        epilog=_FORWARD_EPILOG.replace("mio tunnel", prefix),
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    group = forward.add_argument_group("forwarding")
    group.add_argument(
        "--listen",
        required=True,
        type=_listen_hostport,
        metavar="HOST:PORT",
        help="local address to listen on (required; port 0 picks a free port)",
    )
    group.add_argument(
        "--to",
        required=True,
        type=_name,
        metavar="NAME",
        help="service name to reach (required)",
    )
    group.add_argument(
        "--connect-timeout",
        type=_secs,
        default=20.0,
        metavar="SECONDS",
        help="time a local connection may wait for the relay link and for the far service; "
        "then it is closed (default: %(default)g)",
    )
    _add_dialer(forward)
    _add_common(forward)
    forward.set_defaults(func=run_forward, _tunnel_parser=forward)
    defer_defaults(forward)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``tunnel`` command (with ``relay``, ``agent``, ``forward``) to ``subparsers``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "tunnel",
        help="secure reverse tunnel for NAT traversal (relay, agent, forward)",
        description=_TUNNEL_DESCRIPTION,
        epilog="Run `mio tunnel COMMAND --help` for the options of each command.",
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(
        dest="tunnel_command", metavar="COMMAND", title="commands", required=True
    )
    _add_commands(commands, "mio tunnel")
    return parser


def build_parser(prog: str = "python -m mio.tunnel.cli") -> argparse.ArgumentParser:
    """A stand-alone parser with ``relay``, ``agent`` and ``forward`` as its commands."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=_TUNNEL_DESCRIPTION,
        epilog=f"Run `{prog} COMMAND --help` for the options of each command.",
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(
        dest="tunnel_command", metavar="COMMAND", title="commands", required=True
    )
    _add_commands(commands, prog)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mio.tunnel.cli``: parse ``argv`` and run the command."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


# ---------------------------------------------------------------------- commands
def _setup_logging(args: argparse.Namespace) -> None:
    _clikit.setup_logging(args, "mio.tunnel")
    # websockets logs every frame at DEBUG and each connection at INFO (the tunnel says
    # what matters itself): its warnings by default, all of it from -vv.
    library = logging.getLogger("mio").level
    verbose = getattr(args, "verbose", 0) or 0
    logging.getLogger("websockets").setLevel(
        library if verbose >= 2 else max(library, logging.WARNING)
    )


def _run(main: Callable[[], Coroutine[Any, Any, int]], loop: str = "asyncio") -> int:
    """Run ``main()`` in a fresh event loop of kind ``loop`` (``asyncio`` or ``uvloop``)."""
    from .._bench.common import loop_available, run_in_loop

    why = loop_available(loop)
    if why:
        log.error("--loop %s: %s", loop, why)
        return EXIT_USAGE
    if tune_allocator():  # relay, agent and forwarder move buffers all day: see _allocator
        log.debug("glibc malloc: top pad %d, mmap threshold %d", TOP_PAD, MMAP_THRESHOLD)
    return _clikit.run_command(lambda _: run_in_loop(loop, lambda: _logged(main)), None)


async def _logged(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    loop = asyncio.get_running_loop()
    log.info("event loop: %s.%s", type(loop).__module__, type(loop).__qualname__)
    return await main()


def _link_options(args: argparse.Namespace, role: str, services: Sequence[str]) -> LinkOptions:
    """Raises ValueError/OSError/ssl.SSLError for unusable configuration."""
    secret = load_secret(args.secret_file, allow_insecure=args.insecure_secret_file)
    websocket, proxy = None, None
    if isinstance(args.relay, RelayURL):
        websocket = args.relay
        host, port = websocket.host, websocket.port
        tls_options = args.tls or args.tls_ca or args.tls_fingerprint
        if tls_options and not websocket.secure:
            raise ValueError(
                f"--relay {websocket.url} is plain WebSocket: use wss:// with --tls, "
                "--tls-ca or --tls-fingerprint"
            )
        if websocket.secure:
            args.tls = True  # wss:// alone trusts the system's CAs
        try:
            from . import wslink  # noqa: F401
        except ImportError as exc:
            raise ValueError(f"--relay {websocket.url}: {exc}") from None
        proxy = choose_proxy(websocket, args.proxy, no_proxy=args.no_proxy)
        if proxy is not None and args.proxy is None:
            log.info("reaching the relay through the proxy %s (from the environment)", proxy)
    else:
        host, port = args.relay
        if args.proxy:
            raise ValueError(
                "--proxy needs a WebSocket relay: --relay ws://HOST:PORT/PATH or wss://..."
            )
    proxy_ssl = None
    if proxy is not None and proxy.secure:
        proxy_ssl = proxy_context(args.proxy_ca)
    elif args.proxy_ca:
        raise ValueError(
            "--proxy-ca needs an https:// proxy (--proxy https://HOST:PORT, or $HTTPS_PROXY "
            "for a wss:// relay)"
        )
    context = None
    if args.tls or args.tls_ca or args.tls_fingerprint:
        context = dialer_context(args.tls_ca, args.tls_fingerprint)
    elif websocket is not None:
        log.warning(
            "the relay link is plain WebSocket (ws://): tunneled data is not encrypted "
            "(use wss:// and a relay with --tls-cert)"
        )
    else:
        log.warning(
            "the relay link is plain TCP: tunneled data is not encrypted (use --tls-ca "
            "or --tls-fingerprint)"
        )
    if args.server_name and context is None:
        raise ValueError("--server-name needs TLS (--tls, --tls-ca or --tls-fingerprint)")
    if args.backoff_max < args.backoff_initial:
        raise ValueError("--backoff-max must not be smaller than --backoff-initial")
    return LinkOptions(
        host=host,
        port=port,
        secret=secret,
        role=role,
        name=args.name,
        services=services,
        ssl=context,
        server_name=args.server_name,
        pinned=args.tls_fingerprint,
        auth_timeout=args.auth_timeout,
        keepalive=args.keepalive or None,
        backoff_initial=args.backoff_initial,
        backoff_max=args.backoff_max,
        websocket=websocket,
        proxy=proxy,
        proxy_ssl=proxy_ssl,
    )


def _config_error(exc: BaseException) -> int:
    return _clikit.usage_error(exc, log)


def _resolve(args: argparse.Namespace, command: str) -> argparse.Namespace:
    """``args`` completed from ``--config`` (if any) and the defaults, services merged:
    ``args.public`` (relay) or ``args.service`` (agent) lists, and for the relay
    ``args.service_secrets``, name -> secret. Raises ValueError naming the culprit."""
    args = copy.copy(args)
    options: dict[str, Any] = {}
    services: dict[str, dict[str, Any]] = {}
    if args.config is not None:
        options, services = load_config(args.config, command)
    where = f"--config {args.config}"
    if command in ("relay", "agent"):
        key = "public" if command == "relay" else "local"
        listed: dict[str, tuple[str, str | None, int]] = {}
        for name, entry in services.items():
            if key not in entry:
                continue
            try:
                listed[name] = parse_named(f"{name}={entry[key]}", listen=command == "relay")
            except ValueError as exc:
                raise ConfigError(f"{where}: [services.{name}] {key}: {exc}") from None
        flags = args.public if command == "relay" else args.service
        for name, host, port in flags or ():
            listed[name] = (name, host, port)
        if command == "relay":
            args.public = list(listed.values())
        else:
            args.service = list(listed.values()) or None
    merge_config(args, args._tunnel_parser, options, args.config)
    if command == "relay":
        args.service_secrets = {
            name: load_secret(entry["secret_file"], {}, allow_insecure=args.insecure_secret_file)
            for name, entry in services.items()
            if "secret_file" in entry
        }
    return args


def _agent_services(args: argparse.Namespace) -> dict[str, tuple[str, int]]:
    services: dict[str, tuple[str, int]] = {}
    for name, host, port in args.service:
        if name in services:
            raise ValueError(f"--service {name} given twice")
        services[name] = (host, port)
    return services


def run_relay(args: argparse.Namespace) -> int:
    """``relay``: see its ``--help``."""
    _setup_logging(args)
    raw = args
    try:
        args = _resolve(raw, "relay")
        secret = load_secret(args.secret_file, allow_insecure=args.insecure_secret_file)
        context, binding = None, b""
        if args.tls_cert:
            context = relay_context(args.tls_cert, args.tls_key)
            binding = certificate_digest(args.tls_cert)
        elif args.tls_key:
            raise ValueError("--tls-key needs --tls-cert")
        if not args.ws_path.startswith("/"):
            raise ValueError(f"--ws-path {args.ws_path!r} must start with /")
        if args.ws_listen is not None:
            try:
                from . import wslink  # noqa: F401
            except ImportError as exc:
                raise ValueError(f"--ws-listen: {exc}") from None
        if args.max_pending_per_source > args.max_pending:
            raise ValueError("--max-pending-per-source must not be larger than --max-pending")
    except (ValueError, OSError) as exc:
        return _config_error(exc)
    if context is None:
        log.warning("the relay link is plain TCP: tunneled data is not encrypted (use --tls-cert)")
    host, port = args.listen
    options = RelayOptions(
        host=host,
        port=port,
        publics=args.public,
        secret=secret,
        ssl=context,
        binding=binding,
        auth_timeout=args.auth_timeout,
        max_connections=args.max_connections,
        open_timeout=args.open_timeout,
        idle_timeout=args.idle_timeout or None,
        idle_min_bytes=args.idle_min_bytes,
        keepalive=args.keepalive or None,
        max_pending=args.max_pending,
        max_pending_per_source=args.max_pending_per_source,
        max_port_connections=args.max_port_connections,
        max_source_connections=args.max_source_connections,
        auth_failures=args.auth_failures,
        auth_failure_window=args.auth_failure_window,
        service_secrets=args.service_secrets,
        ws_host=args.ws_listen[0] if args.ws_listen is not None else None,
        ws_port=args.ws_listen[1] if args.ws_listen is not None else None,
        ws_path=args.ws_path,
    )

    async def relay_main() -> int:
        stop, hurry = asyncio.Event(), asyncio.Event()
        remove = install_signal_handlers(stop, hurry, args.grace)
        relay = Relay(options)
        try:
            metrics = None
            try:
                metrics = await _start_metrics(args, relay.metrics)
                if binding:  # first line, but only once the relay can start at all
                    relay.early_lines.append(f"relay tls-fingerprint {format_fingerprint(binding)}")
                await relay.start()
            except OSError as exc:
                log.error("%s", exc if isinstance(exc, ListenError) else f"cannot listen: {exc}")
                await _stop_metrics(metrics)
                await relay.shutdown(0)
                return EXIT_ERROR
            _announce_metrics(metrics)

            async def reload() -> None:
                try:
                    fresh = _resolve(raw, "relay")
                except (ValueError, OSError) as exc:
                    log.error("SIGHUP: configuration not reloaded: %s", exc)
                    return
                try:
                    await relay.reload(fresh.public, fresh.service_secrets)
                except OSError as exc:
                    log.error("SIGHUP: configuration not reloaded: %s", exc)

            unhook = on_sighup(reload)
            try:
                await stop.wait()
            finally:
                unhook()
            await relay.shutdown(args.grace, hurry)
            await _stop_metrics(metrics)
            log.info("relay stopped")
            return EXIT_OK
        finally:
            remove()

    return _run(relay_main, args.loop)


def run_agent(args: argparse.Namespace) -> int:
    """``agent``: see its ``--help``."""
    _setup_logging(args)
    raw = args
    services: dict[str, tuple[str, int]] = {}
    try:
        args = _resolve(raw, "agent")
        services = _agent_services(args)
        link = _link_options(args, "agent", list(services))
    except (ValueError, OSError, ssl.SSLError) as exc:
        return _config_error(exc)
    options = AgentOptions(
        link=link,
        services=services,
        connect_timeout=args.connect_timeout,
        idle_timeout=args.idle_timeout or None,
        idle_min_bytes=args.idle_min_bytes,
    )

    async def agent_main() -> int:
        stop, hurry = asyncio.Event(), asyncio.Event()
        remove = install_signal_handlers(stop, hurry, args.grace)
        agent = Agent(options)

        async def reload() -> None:
            try:
                fresh = _resolve(raw, "agent")
                targets = _agent_services(fresh)
            except (ValueError, OSError) as exc:
                log.error("SIGHUP: configuration not reloaded: %s", exc)
                return
            await agent.reload(targets)

        try:
            metrics = await _start_metrics(args, agent.metrics)
        except ListenError as exc:
            log.error("%s", exc)
            remove()
            return EXIT_ERROR
        _announce_metrics(metrics)
        unhook = on_sighup(reload)
        try:
            status = await agent.run(stop)
            await agent.shutdown(args.grace if status == EXIT_OK else 0, hurry)
            log.info("agent stopped")
            return status
        finally:
            await _stop_metrics(metrics)
            unhook()
            remove()

    return _run(agent_main, args.loop)


def run_forward(args: argparse.Namespace) -> int:
    """``forward``: see its ``--help``."""
    _setup_logging(args)
    try:
        args = _resolve(args, "forward")
        link = _link_options(args, "forward", ())
    except (ValueError, OSError, ssl.SSLError) as exc:
        return _config_error(exc)
    host, port = args.listen
    options = ForwardOptions(
        link=link,
        host=host,
        port=port,
        service=args.to,
        connect_timeout=args.connect_timeout,
        idle_timeout=args.idle_timeout or None,
        idle_min_bytes=args.idle_min_bytes,
    )

    async def forward_main() -> int:
        stop, hurry = asyncio.Event(), asyncio.Event()
        remove = install_signal_handlers(stop, hurry, args.grace)
        forwarder = Forwarder(options)
        try:
            try:
                await forwarder.start()
            except OSError as exc:
                where = format_address((args.listen[0] or "", args.listen[1]))
                log.error("--listen %s: cannot listen: %s", where, exc.strerror or exc)
                return EXIT_ERROR
            status = await forwarder.run(stop)
            await forwarder.shutdown(args.grace if status == EXIT_OK else 0, hurry)
            log.info("forward stopped")
            return status
        finally:
            remove()

    return _run(forward_main, args.loop)


if __name__ == "__main__":
    sys.exit(main())
