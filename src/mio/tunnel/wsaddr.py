"""WebSocket relay addresses and HTTP proxies: parsing and choosing (no ``websockets`` needed).

``--relay`` takes ``HOST:PORT`` (the relay's ``--listen``, raw mio over TCP/TLS) or a URL
``ws://HOST[:PORT][/PATH]`` / ``wss://HOST[:PORT][/PATH]`` (its ``--ws-listen``). A
WebSocket link goes through the HTTP proxy of ``--proxy http://[USER:PASSWORD@]HOST:PORT``
(``https://`` for a proxy reached over TLS, ``--proxy-ca`` if its certificate is not from
a CA the system trusts), or else the one in the environment: ``HTTPS_PROXY``/``https_proxy`` for ``wss://``,
``HTTP_PROXY``/``http_proxy`` for ``ws://``, unless ``NO_PROXY``/``no_proxy`` lists the
relay's host or ``--no-proxy`` is given. ``--proxy`` itself is never overridden by
``NO_PROXY``.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
import urllib.parse
import urllib.request
from collections.abc import Mapping

from .addr import format_address

__all__ = (
    "DEFAULT_PATH",
    "RelayURL",
    "Proxy",
    "ProxyCertificateError",
    "parse_relay_url",
    "parse_proxy",
    "choose_proxy",
)

#: The relay's ``--ws-path`` unless told otherwise (also the path of a URL without one).
DEFAULT_PATH = "/mio-tunnel"


@dataclasses.dataclass(frozen=True)
class RelayURL:
    """A ``ws://`` or ``wss://`` relay address."""

    secure: bool
    host: str
    port: int
    path: str

    @property
    def url(self) -> str:
        scheme = "wss" if self.secure else "ws"
        return f"{scheme}://{format_address((self.host, self.port))}{self.path}"

    def __str__(self) -> str:
        return self.url


@dataclasses.dataclass(frozen=True)
class Proxy:
    """An HTTP proxy (CONNECT), reached over TLS when ``secure`` (``https://``).
    :attr:`url` holds the credentials, :meth:`__str__` not."""

    url: str
    host: str
    port: int
    username: str | None
    secure: bool = False

    def __str__(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"{scheme}://{format_address((self.host, self.port))}"


class ProxyCertificateError(ssl.SSLCertVerificationError):
    """An ``https://`` proxy's TLS certificate is not trusted; the message names the proxy,
    why, and the option that fixes it (``--proxy-ca``)."""


def parse_relay_url(text: str) -> RelayURL:
    """Parse ``ws[s]://HOST[:PORT][/PATH]``; the port defaults to 80/443 and the path to
    :data:`DEFAULT_PATH`. Raises :class:`ValueError` saying what is wrong."""
    parsed = urllib.parse.urlsplit(text.strip())
    if parsed.scheme not in ("ws", "wss"):
        raise ValueError(f"not a ws:// or wss:// URL: {text!r}")
    try:
        port = parsed.port
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    if not parsed.hostname:
        raise ValueError(f"no host in {text!r}")
    if parsed.username is not None or parsed.fragment:
        raise ValueError(f"{text!r}: user names and fragments are not allowed in the relay URL")
    secure = parsed.scheme == "wss"
    path = parsed.path or DEFAULT_PATH
    if parsed.query:
        path = f"{path}?{parsed.query}"
    return RelayURL(secure, parsed.hostname, port or (443 if secure else 80), path)


def parse_proxy(text: str, origin: str = "--proxy") -> Proxy:
    """Parse ``http[s]://[USER:PASSWORD@]HOST[:PORT]`` (port 8080 for http://, 443 for
    https://; credentials percent-encoded; no scheme means http://). Raises
    :class:`ValueError` naming ``origin``."""
    value = text.strip()
    if "://" not in value:
        value = "http://" + value  # as curl and the environment variables allow
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https"):
        raise ValueError(
            f"{origin} {_hide(text)}: only http:// and https:// proxies (HTTP CONNECT) "
            "are supported"
        )
    try:
        port = parsed.port
    except ValueError:
        raise ValueError(f"{origin} {_hide(text)}: bad port") from None
    if not parsed.hostname:
        raise ValueError(f"{origin} {_hide(text)}: no host")
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise ValueError(f"{origin} {_hide(text)}: a proxy address has no path")
    if parsed.username is not None and parsed.password is None:
        raise ValueError(f"{origin} {_hide(text)}: give USER:PASSWORD, not only a user name")
    secure = parsed.scheme == "https"
    port = port or (443 if secure else 8080)
    netloc = format_address((parsed.hostname, port))
    if parsed.username is not None:
        netloc = f"{parsed.username}:{parsed.password}@{netloc}"
    return Proxy(f"{parsed.scheme}://{netloc}", parsed.hostname, port, parsed.username, secure)


def choose_proxy(
    relay: RelayURL,
    explicit: str | None,
    *,
    no_proxy: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Proxy | None:
    """The proxy to reach ``relay`` through (see the module docstring), or None."""
    if explicit:
        return parse_proxy(explicit)
    if no_proxy:
        return None
    env = os.environ if environ is None else environ
    names = ("HTTPS_PROXY", "https_proxy") if relay.secure else ("HTTP_PROXY", "http_proxy")
    for name in names:
        value = env.get(name)
        if value:
            break
    else:
        return None
    bypass = env.get("NO_PROXY") or env.get("no_proxy") or ""
    if bypass and _bypassed(relay, bypass):
        return None
    return parse_proxy(value, f"${name}")


def _bypassed(relay: RelayURL, no_proxy: str) -> bool:
    host = f"[{relay.host}]" if ":" in relay.host else relay.host
    bypass = getattr(urllib.request, "proxy_bypass_environment")  # noqa: B009 (not in typeshed)
    return bool(bypass(f"{host}:{relay.port}", {"no": no_proxy}))


def _hide(text: str) -> str:
    """``text`` without a password."""
    parsed = urllib.parse.urlsplit(text if "://" in text else "http://" + text)
    if parsed.password is None:
        return text
    return text.replace(f":{parsed.password}@", ":***@")
