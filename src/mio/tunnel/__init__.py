"""``mio tunnel``: a secure reverse tunnel for NAT traversal, built on mio sessions.

An *agent* behind a NAT dials a public *relay* once and keeps that session up. The relay
listens on public ports; each TCP connection to one becomes a stream the relay opens to the
agent (server-side open), which the agent connects to a local service. A *forwarder* is the
``ssh -L`` direction: it listens locally and reaches a service of an agent through the relay.

Modules:

* :mod:`.addr` -- ``HOST:PORT`` and ``NAME=HOST:PORT`` values
* :mod:`.protocol` -- the tunnel's control and header messages on mio streams
* :mod:`.auth` -- the shared secret and the mutual challenge-response handshake
* :mod:`.tls` -- TLS contexts, certificate pinning and channel binding
* :mod:`.pipe` -- bidirectional copying with half-close, reset and idle timeout
* :mod:`.lifecycle` -- readiness lines, signals (SIGHUP too), graceful draining
* :mod:`.admission` -- the relay's agent listener: TLS or plain, resets, bind errors
* :mod:`.limits` -- connection counters, failed-auth rate limiting, summary log lines
* :mod:`.registry` -- which agents serve which names (round-robin)
* :mod:`.link` -- the agent's and forwarder's authenticated, redialed session to the relay
* :mod:`.relay`, :mod:`.agent`, :mod:`.forward` -- the three roles
* :mod:`.metrics` -- the Prometheus text endpoint (``--metrics``)
* :mod:`.config` -- the TOML configuration file (``--config``)
* :mod:`.cli` -- the ``tunnel`` command line (``relay``, ``agent``, ``forward``)

See ``docs/TUNNEL.md`` for a walkthrough.
"""

from __future__ import annotations
