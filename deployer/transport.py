"""Channels to a node, plaintext or TLS, and one readable line when a connection fails.

gRPC's own reasons for a failed connection are accurate but cryptic ("Socket closed",
"WRONG_VERSION_NUMBER", "missing selected ALPN property"). When a channel does not connect,
:func:`wait_connected` asks gRPC for its last error and, when that is not conclusive,
probes the port itself (a TLS handshake, then an HTTP/2 preface) to tell apart: nothing
listening, a certificate this client does not trust, a node that wants a client
certificate, TLS spoken to a plaintext port or the reverse, and a port that is not gRPC at
all (the node's HTTP port, say).
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deployer.errors import Unreachable, UsageError

_MAX_MESSAGE = 64 * 1024 * 1024
_SETTLED = (
    grpc.ChannelConnectivity.READY,
    grpc.ChannelConnectivity.TRANSIENT_FAILURE,
    grpc.ChannelConnectivity.SHUTDOWN,
)
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS
_PROBE_TIMEOUT = 3.0
_GRPC_PORT_HINT = "give the node's gRPC port (apinode serve --grpc-port, default 12001)"


@dataclass(frozen=True, slots=True)
class Tls:
    """How to reach a node over TLS: the CA to trust (None: the system's), and a client
    certificate and key for a node that requires one (mutual TLS)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @classmethod
    def of(
        cls, ca: Path | None, cert: Path | None, key: Path | None, *, enabled: bool = False, where: str = ""
    ) -> Tls | None:
        """TLS settings from options (None: plaintext); UsageError for a half-given pair."""
        if (cert is None) != (key is None):
            raise UsageError(f"{where}--tls-cert and --tls-key go together (a client certificate and its key)")
        if ca is None and cert is None and not enabled:
            return None
        for path in (ca, cert, key):
            if path is not None and not path.is_file():
                raise UsageError(f"{where}no such file: {path}")
        return cls(ca, cert, key)

    def _read(self, path: Path | None) -> bytes | None:
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self._read(self.ca),
            private_key=self._read(self.key),
            certificate_chain=self._read(self.cert),
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The same trust and client certificate, for JSON HTTP (`https://`)."""
        ctx = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        if self.cert is not None and self.key is not None:
            try:
                ctx.load_cert_chain(self.cert, self.key)
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"cannot use the client certificate {self.cert}: {exc}") from None
        return ctx


def channel(target: str, tls: Tls | None = None) -> grpc.Channel:
    """A channel to a node (admin and user gRPC share the node's port)."""
    opts = [
        ("grpc.max_receive_message_length", _MAX_MESSAGE),
        ("grpc.max_send_message_length", _MAX_MESSAGE),
    ]
    if tls is None:
        return grpc.insecure_channel(target, options=opts)
    return grpc.secure_channel(target, tls.credentials(), options=opts)


def wait_connected(ch: grpc.Channel, target: str, timeout: float, tls: Tls | None = None) -> None:
    """Raises Unreachable, saying why, unless the channel connects within `timeout` seconds.

    A refused connection or a failed handshake fails at once (TRANSIENT_FAILURE), not
    after the timeout.
    """
    done = threading.Event()
    states: list[grpc.ChannelConnectivity] = []

    def watch(state: grpc.ChannelConnectivity) -> None:
        states.append(state)
        if state in _SETTLED:
            done.set()

    ch.subscribe(watch, try_to_connect=True)
    try:
        done.wait(timeout)
    finally:
        ch.unsubscribe(watch)
    last = states[-1] if states else None
    if last == grpc.ChannelConnectivity.READY:
        return
    if last == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
        raise Unreachable(explain(target, tls, _last_error(ch)))
    raise Unreachable(f"node {target} unreachable: no connection in {timeout:g} s")


def _last_error(ch: grpc.Channel) -> str:
    """gRPC's reason for the failed connection: a fail-fast call reports it."""
    try:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=_PROBE_TIMEOUT)
    except grpc.RpcError as exc:
        return (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    return ""


def explain(target: str, tls: Tls | None, details: str) -> str:
    """One line saying why `target` could not be reached, from gRPC's `details` and, when
    they are not conclusive, a probe of the port."""
    low = details.lower()
    if "connection refused" in low:
        return f"node {target} unreachable: connection refused (nothing listens on that port)"
    if "certificate_verify_failed" in low:
        reason = details.rsplit("CERTIFICATE_VERIFY_FAILED:", 1)[-1].split(":")[0].strip() or "not trusted"
        return (
            f"TLS handshake with node {target} failed: its certificate is not trusted ({reason}); "
            "give the CA that signed it with --tls-ca"
        )
    if "peer name" in low and "not in peer certificate" in low:
        return f"TLS handshake with node {target} failed: its certificate does not name {_host(target)}"
    if "http1.x server" in low or "expected settings frame" in low:
        return f"{target} is not a gRPC port: it answers HTTP/1.1 (the node's HTTP port?); {_GRPC_PORT_HINT}"
    if "missing selected alpn" in low:
        return f"{target} is not a gRPC port: it speaks TLS without HTTP/2 (the node's HTTPS port?); {_GRPC_PORT_HINT}"
    found = probe(target)
    if tls is None:
        if found.startswith("tls"):
            return (
                f"node {target} serves TLS on this port, and this client spoke plaintext: give --tls-ca CA (or --tls)"
            )
        if found == "http1":
            return f"{target} is not a gRPC port: it answers HTTP/1.1 (the node's HTTP port?); {_GRPC_PORT_HINT}"
    else:
        if found == "h2":
            return (
                f"node {target} serves plaintext gRPC, and this client spoke TLS: drop --tls-ca/--tls-cert "
                "(or start the node with --tls-cert/--tls-key)"
            )
        if found == "http1":
            return (
                f"{target} is not a gRPC port: it answers plaintext HTTP/1.1 (the node's HTTP port?); {_GRPC_PORT_HINT}"
            )
        if found == "tls-http1":
            return (
                f"{target} is not a gRPC port: it speaks TLS without HTTP/2 (the node's HTTPS port?); {_GRPC_PORT_HINT}"
            )
        if found == "tls-client-cert" and tls.cert is None:
            return (
                f"TLS handshake with node {target} failed: the node requires a client certificate "
                "(mutual TLS): give --tls-cert and --tls-key"
            )
        if found == "tls-client-cert":
            return (
                f"TLS handshake with node {target} failed: the node refused the client certificate "
                f"{tls.cert} (is it signed by the CA the node was given with --tls-client-ca?)"
            )
    if found == "refused":
        return f"node {target} unreachable: connection refused (nothing listens on that port)"
    return f"node {target} unreachable: {details or 'cannot connect'}"


def _host(target: str) -> str:
    host = target.rsplit(":", 1)[0] if ":" in target else target
    return host.strip("[]")


def probe(target: str) -> str:
    """What listens at `target`: "refused", "tls-h2", "tls-http1", "tls-client-cert" (TLS
    HTTP/2 that hangs up on a client without a certificate), "h2" (plaintext HTTP/2),
    "http1", or "unknown"."""
    host, _, port_text = target.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        return "unknown"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only asking whether TLS is spoken, not trusting anything
    ctx.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), _PROBE_TIMEOUT) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as s,
        ):
            if s.selected_alpn_protocol() != "h2":
                return "tls-http1"
            # A node that wants a client certificate hangs up (or alerts) right after the
            # handshake; one that does not answers the preface with its SETTINGS.
            try:
                s.sendall(_H2_PREFACE)
                head = s.recv(16)
            except (ssl.SSLError, OSError):
                head = b""
            return "tls-h2" if head else "tls-client-cert"
    except ConnectionRefusedError:
        return "refused"
    except OSError:  # ssl.SSLError included: not TLS, try plaintext HTTP/2
        pass
    try:
        with socket.create_connection((host, port), _PROBE_TIMEOUT) as s:
            s.sendall(_H2_PREFACE)
            head = s.recv(16)
    except OSError:
        return "unknown"
    if head.startswith(b"HTTP/"):
        return "http1"
    if len(head) >= 4 and head[3] == 0x04:  # a SETTINGS frame
        return "h2"
    return "unknown"
