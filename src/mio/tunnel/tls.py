"""TLS for the relay link: contexts, certificate fingerprints and the channel binding."""

from __future__ import annotations

import hashlib
import re
import ssl
from typing import Any

__all__ = (
    "read_file",
    "relay_context",
    "dialer_context",
    "proxy_context",
    "certificate_digest",
    "parse_fingerprint",
    "format_fingerprint",
    "peer_certificate_digest",
)

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s*.+?\s*-----END CERTIFICATE-----", re.DOTALL)


def read_file(option: str, path: str) -> bytes:
    """The contents of ``path``; a :class:`ValueError` naming ``option`` and the file if
    it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot read it: {exc.strerror or exc}") from None


def certificate_digest(cert_file: str) -> bytes:
    """SHA-256 of the first (leaf) certificate of a PEM file, in DER form."""
    match = _PEM_CERT.search(read_file("--tls-cert", cert_file))
    if match is None:
        raise ValueError(f"--tls-cert {cert_file}: no PEM certificate in it")
    der = ssl.PEM_cert_to_DER_cert(match.group(0).decode("ascii"))
    return hashlib.sha256(der).digest()


def relay_context(cert_file: str, key_file: str | None) -> ssl.SSLContext:
    """Server context of the relay (TLS 1.2 or newer).

    Raises :class:`ValueError` naming the option and file that is missing, unreadable or
    not what it should be.
    """
    cert = read_file("--tls-cert", cert_file)
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise ValueError(f"--tls-cert {cert_file}: no PEM certificate in it")
    if key_file is None:
        if b"PRIVATE KEY-----" not in cert:
            raise ValueError(
                f"--tls-cert {cert_file} holds no private key: give its key with --tls-key FILE"
            )
    elif b"PRIVATE KEY-----" not in read_file("--tls-key", key_file):
        raise ValueError(f"--tls-key {key_file}: no PEM private key in it")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        where = f"--tls-cert {cert_file}" + (f" with --tls-key {key_file}" if key_file else "")
        raise ValueError(
            f"{where}: not a usable certificate and private key "
            f"({exc.reason or exc}; do they belong together?)"
        ) from None
    return ctx


def _ca_context(option: str, ca_file: str) -> ssl.SSLContext:
    """A client context trusting the PEM CA certificates of ``ca_file`` (given as
    ``option``); a :class:`ValueError` naming both if they are unusable."""
    if b"-----BEGIN CERTIFICATE-----" not in read_file(option, ca_file):
        raise ValueError(f"{option} {ca_file}: no PEM certificate in it")
    try:
        return ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as exc:
        raise ValueError(f"{option} {ca_file}: not a PEM CA file ({exc.reason or exc})") from None


def proxy_context(ca_file: str | None) -> ssl.SSLContext:
    """Client context for an ``https://`` proxy: its certificate must chain to ``ca_file``
    (``--proxy-ca``) or else to the system's trust store, and match its host name."""
    if ca_file is not None:
        ctx = _ca_context("--proxy-ca", ca_file)
    else:
        ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def dialer_context(ca_file: str | None, pinned: bytes | None) -> ssl.SSLContext:
    """Client context of an agent or forwarder.

    With ``ca_file``, the relay's certificate must chain to it and match the host name;
    with only a pinned fingerprint, chain and name are not checked (the pin is, after the
    handshake, see :func:`peer_certificate_digest`); with neither, the system's trust store.
    """
    if ca_file is not None:
        ctx = _ca_context("--tls-ca", ca_file)
    elif pinned is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def parse_fingerprint(text: str) -> bytes:
    """Parse a SHA-256 fingerprint: 64 hex digits, colons and a ``sha256:`` prefix allowed."""
    value = text.strip()
    if value.lower().startswith(("sha256:", "sha256=")):
        value = value[7:]
    value = value.replace(":", "").replace(" ", "")
    try:
        digest = bytes.fromhex(value)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ValueError(f"not a SHA-256 fingerprint (64 hex digits): {text!r}")
    return digest


def format_fingerprint(digest: bytes) -> str:
    """``sha256:`` and the digest in lowercase hex, as the relay prints it."""
    return "sha256:" + digest.hex()


def peer_certificate_digest(transport_info: Any) -> bytes | None:
    """SHA-256 of the peer's certificate on a TLS session, or None without TLS.

    ``transport_info`` is anything with ``get_extra_info`` (a :class:`mio.Session`).
    """
    ssl_object = transport_info.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if der is None:
        return None
    return hashlib.sha256(der).digest()
