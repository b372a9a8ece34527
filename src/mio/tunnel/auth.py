"""Shared-secret authentication: a mutual HMAC-SHA256 challenge-response.

Nothing is exposed before the dialer (agent or forwarder) proves it knows the secret, and
the dialer trusts nothing before the relay proves it too. On the first stream, which the
dialer opens:

1. relay -> dialer: ``challenge`` with a fresh 32-octet nonce ``Nr`` and the channel
   binding the relay uses;
2. dialer -> relay: ``auth`` with its role, name, services, a fresh nonce ``Na`` and
   ``HMAC-SHA256(secret, transcript("agent"))``;
3. relay -> dialer: ``welcome`` with ``HMAC-SHA256(secret, transcript("relay"))``, or an
   ``error`` (then the relay closes the session).

``transcript(speaker) = "mio-tunnel/1" 0x00 speaker 0x00 role 0x00 Nr Na B``, where ``B``
is the channel binding: with TLS, the SHA-256 of the relay's certificate (DER) -- the relay
takes it from its certificate file, the dialer from the TLS connection -- so a proof cannot
be relayed through a man in the middle holding another certificate; without TLS, empty.
Proofs are compared with :func:`hmac.compare_digest`. The relay speaks last and only to a
dialer that proved itself, so a stranger learns nothing it could test guesses against.
Secrets are never logged or sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import os
import secrets
import stat
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .addr import validate_name
from .protocol import (
    VERSION,
    MessageStream,
    TunnelProtocolError,
    error_message,
    get_hex,
    get_str,
    read_message,
    write_message,
)

__all__ = (
    "SECRET_ENV",
    "ROLES",
    "BINDING_NONE",
    "BINDING_CERT",
    "AuthError",
    "AuthFailed",
    "AuthTimeout",
    "Mismatch",
    "Unavailable",
    "Hello",
    "Welcome",
    "load_secret",
    "compute_proof",
    "relay_handshake",
    "dialer_handshake",
)

log = logging.getLogger("mio.tunnel.auth")

#: Environment variable holding the shared secret when no ``--secret-file`` is given.
SECRET_ENV = "MIO_TUNNEL_SECRET"
#: The roles a dialer may authenticate as.
ROLES = ("agent", "forward")
#: Channel binding names announced in the challenge.
BINDING_NONE = "none"
BINDING_CERT = "tls-cert-sha256"

NONCE_SIZE = 32
PROOF_SIZE = 32
MIN_SECRET_SIZE = 16
#: Most service names one agent may register.
MAX_SERVICES = 256
_LABEL = b"mio-tunnel/1"


class AuthError(Exception):
    """Authentication did not succeed."""


class AuthFailed(AuthError):
    """The other side does not know the secret (or its certificate does not match)."""


class AuthTimeout(AuthError):
    """The handshake did not finish in time."""


class Mismatch(AuthError):
    """The relay and this side disagree on the transport (TLS on one side only)."""


class Unavailable(AuthError):
    """The relay refused for a transient reason (it is shutting down): try again later."""


@dataclasses.dataclass(frozen=True)
class Hello:
    """What the relay learns about an authenticated dialer.

    ``scope``: the service names its secret covers -- None for the relay's main secret
    (every name without a secret of its own), else exactly the names of that secret.
    """

    role: str
    name: str
    services: tuple[str, ...]
    scope: frozenset[str] | None = None
    own_secrets: frozenset[str] = dataclasses.field(default=frozenset(), compare=False)

    def may_use(self, service: str) -> bool:
        """Whether this dialer may serve (agent) or reach (forwarder) ``service``."""
        if self.scope is None:
            return service not in self.own_secrets
        return service in self.scope


@dataclasses.dataclass(frozen=True)
class Welcome:
    """What the dialer learns about the relay."""

    binding: str
    keepalive: float | None


def load_secret(
    path: str | None,
    environ: Mapping[str, str] | None = None,
    *,
    allow_insecure: bool = False,
) -> bytes:
    """Read the shared secret from ``path`` or else the ``MIO_TUNNEL_SECRET`` variable.

    Surrounding whitespace (a trailing newline) is stripped. Raises :class:`ValueError`
    with a usable message when there is no secret or it is empty, or (on POSIX, unless
    ``allow_insecure``) when the file is accessible to its group or to others, as OpenSSH
    refuses such key files.
    """
    env = os.environ if environ is None else environ
    if path is not None:
        try:
            with open(path, "rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                secret = f.read().strip()
        except OSError as exc:
            raise ValueError(
                f"--secret-file {path}: cannot read it: {exc.strerror or exc}"
            ) from None
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            if not allow_insecure:
                raise ValueError(
                    f"--secret-file {path}: accessible by group or others (mode "
                    f"{stat.S_IMODE(mode):04o}): run `chmod 600 {path}`, or pass "
                    "--insecure-secret-file to use it anyway"
                )
            log.warning("secret file %s is accessible by group or others: chmod 600 it", path)
        where = f"secret file {path}"
    elif env.get(SECRET_ENV):
        secret = env[SECRET_ENV].strip().encode("utf-8")
        where = f"${SECRET_ENV}"
    else:
        raise ValueError(f"no shared secret: use --secret-file PATH or set {SECRET_ENV}")
    if not secret:
        raise ValueError(f"the {where} is empty")
    if len(secret) < MIN_SECRET_SIZE:
        log.warning(
            "the %s is short (%d octets): use at least %d random octets, e.g. "
            "`openssl rand -hex 32`",
            where,
            len(secret),
            MIN_SECRET_SIZE,
        )
    return secret


def compute_proof(
    secret: bytes, speaker: str, role: str, relay_nonce: bytes, dialer_nonce: bytes, binding: bytes
) -> bytes:
    """``HMAC-SHA256(secret, transcript)``; ``speaker`` is ``"agent"`` or ``"relay"``."""
    if len(relay_nonce) != NONCE_SIZE or len(dialer_nonce) != NONCE_SIZE:
        raise ValueError("nonces must be 32 octets")
    transcript = b"\0".join((_LABEL, speaker.encode(), role.encode(), b""))
    transcript += relay_nonce + dialer_nonce + binding
    return hmac.new(secret, transcript, hashlib.sha256).digest()


async def _with_timeout(coro: Any, timeout: float | None, what: str) -> Any:
    if timeout is None:
        return await coro
    try:
        return await asyncio.wait_for(coro, timeout)
    except TimeoutError:
        raise AuthTimeout(f"{what} did not finish within {timeout:g} s") from None


async def relay_handshake(
    stream: MessageStream,
    secret: bytes,
    *,
    binding: bytes = b"",
    keepalive: float | None = None,
    available: Callable[[], bool] = lambda: True,
    timeout: float | None = None,
    service_secrets: Mapping[str, bytes] | None = None,
) -> Hello:
    """The relay's side of the handshake on the first stream of a session.

    Args:
        service_secrets: services with a secret of their own: only a dialer proving that
            secret may serve or reach them, and such a dialer only them (see
            :attr:`Hello.scope`); ``secret`` covers every other name.
        binding: the SHA-256 of the relay's TLS certificate, or ``b""`` without TLS.
        keepalive: the relay's keepalive interval, announced so dialers can match it.
        available: called once the dialer is authenticated; False refuses it as
            ``unavailable`` (the relay is shutting down).

    Raises:
        AuthFailed: wrong proof (an ``error`` was sent; close the session).
        AuthTimeout: ``timeout`` elapsed.
        TunnelProtocolError: a malformed message.
    """
    return await _with_timeout(  # type: ignore[no-any-return]
        _relay_handshake(stream, secret, binding, keepalive, available, service_secrets or {}),
        timeout,
        "authentication",
    )


async def _relay_handshake(
    stream: MessageStream,
    secret: bytes,
    binding: bytes,
    keepalive: float | None,
    available: Callable[[], bool],
    service_secrets: Mapping[str, bytes],
) -> Hello:
    relay_nonce = secrets.token_bytes(NONCE_SIZE)
    write_message(
        stream,
        {
            "type": "challenge",
            "version": VERSION,
            "nonce": relay_nonce.hex(),
            "binding": BINDING_CERT if binding else BINDING_NONE,
            "keepalive": keepalive,
        },
    )
    try:
        msg = await read_message(stream, "auth")
        if msg.get("version") != VERSION:
            raise TunnelProtocolError(f"unsupported protocol version {msg.get('version')!r}")
        role = get_str(msg, "role")
        if role not in ROLES:
            raise TunnelProtocolError(f"unknown role {role!r}")
        name = get_str(msg, "name", max_length=64)
        dialer_nonce = get_hex(msg, "nonce", NONCE_SIZE)
        proof = get_hex(msg, "proof", PROOF_SIZE)
        services: tuple[str, ...] = ()
        if role == "agent":
            raw = msg.get("services")
            if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
                raise TunnelProtocolError("field 'services' must be a list of names")
            if len(raw) > MAX_SERVICES:
                raise TunnelProtocolError(f"more than {MAX_SERVICES} services")
            try:
                services = tuple(validate_name(s) for s in raw)
            except ValueError as exc:
                raise TunnelProtocolError(str(exc)) from None
    except TunnelProtocolError as exc:
        write_message(stream, error_message("protocol", str(exc)))
        raise
    candidates: dict[bytes, frozenset[str] | None] = {secret: None}
    for service, own in service_secrets.items():
        if own != secret:
            candidates[own] = frozenset((candidates.get(own) or frozenset()) | {service})
    matched: bytes | None = None
    for candidate in candidates:  # every candidate is checked: no early exit
        expected = compute_proof(candidate, "agent", role, relay_nonce, dialer_nonce, binding)
        if hmac.compare_digest(expected, proof) and matched is None:
            matched = candidate
    if matched is None:
        write_message(stream, error_message("auth", "authentication failed"))
        raise AuthFailed(f"{role} {name!r} sent a wrong proof (wrong secret?)")
    hello = Hello(
        role,
        name,
        services,
        candidates[matched],
        frozenset(n for n, own in service_secrets.items() if own != secret),
    )
    refused = [s for s in services if not hello.may_use(s)]
    if refused:
        write_message(stream, error_message("auth", f"this secret does not cover {refused[0]!r}"))
        raise AuthFailed(f"{role} {name!r} may not serve {refused[0]!r} with its secret")
    secret = matched
    if not available():
        write_message(stream, error_message("unavailable", "the relay is shutting down"))
        raise Unavailable("the relay is shutting down")
    write_message(
        stream,
        {
            "type": "welcome",
            "proof": compute_proof(secret, "relay", role, relay_nonce, dialer_nonce, binding).hex(),
        },
    )
    return hello


async def dialer_handshake(
    stream: MessageStream,
    secret: bytes,
    *,
    role: str,
    name: str,
    services: Sequence[str] = (),
    binding: Callable[[str], bytes] = lambda kind: b"",
    timeout: float | None = None,
) -> Welcome:
    """The agent's or forwarder's side of the handshake, on the stream it opened first.

    Args:
        binding: maps the binding the relay announces (``"none"`` or
            ``"tls-cert-sha256"``) to its value on this side; raise :class:`AuthFailed`
            for one it cannot provide.

    Raises:
        AuthFailed: the relay refused our proof or could not prove it knows the secret.
        Unavailable: the relay refused for a transient reason.
        Mismatch: the relay requires TLS and this link is plain.
        AuthTimeout: ``timeout`` elapsed.
        TunnelProtocolError: a malformed message, or the relay ended the stream.
    """
    return await _with_timeout(  # type: ignore[no-any-return]
        _dialer_handshake(stream, secret, role, name, tuple(services), binding),
        timeout,
        "authentication",
    )


async def _dialer_handshake(
    stream: MessageStream,
    secret: bytes,
    role: str,
    name: str,
    services: tuple[str, ...],
    binding_for: Callable[[str], bytes],
) -> Welcome:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    challenge = await read_message(stream, "challenge", "error")
    if challenge["type"] == "error":
        refusal = str(challenge.get("error", "refused"))
        if challenge.get("code") == "tls-required":
            raise Mismatch(refusal)
        raise TunnelProtocolError(f"the relay refused the connection: {refusal}")
    if challenge.get("version") != VERSION:
        raise TunnelProtocolError(f"relay speaks protocol version {challenge.get('version')!r}")
    relay_nonce = get_hex(challenge, "nonce", NONCE_SIZE)
    kind = get_str(challenge, "binding")
    if kind not in (BINDING_NONE, BINDING_CERT):
        raise TunnelProtocolError(f"unknown channel binding {kind!r}")
    keepalive = challenge.get("keepalive")
    if not isinstance(keepalive, (int, float)) or isinstance(keepalive, bool) or keepalive <= 0:
        keepalive = None
    binding = binding_for(kind)
    dialer_nonce = secrets.token_bytes(NONCE_SIZE)
    message: dict[str, Any] = {
        "type": "auth",
        "version": VERSION,
        "role": role,
        "name": name,
        "nonce": dialer_nonce.hex(),
        "proof": compute_proof(secret, "agent", role, relay_nonce, dialer_nonce, binding).hex(),
    }
    if role == "agent":
        message["services"] = list(services)
    write_message(stream, message)
    reply = await read_message(stream, "welcome", "error")
    if reply["type"] == "error":
        code, text = reply.get("code"), reply.get("error")
        if code == "auth":
            raise AuthFailed(f"the relay rejected our proof: {text} (wrong secret?)")
        if code == "unavailable":
            raise Unavailable(f"the relay is unavailable: {text}")
        raise TunnelProtocolError(f"the relay refused the handshake: {text}")
    proof = get_hex(reply, "proof", PROOF_SIZE)
    expected = compute_proof(secret, "relay", role, relay_nonce, dialer_nonce, binding)
    if not hmac.compare_digest(expected, proof):
        raise AuthFailed("the relay could not prove it knows the secret")
    return Welcome(kind, float(keepalive) if keepalive is not None else None)
