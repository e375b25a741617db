"""TLS for every port and mutual TLS between the gateway and its workers.

A server with a certificate and key serves TLS; given a client CA as well it demands a client
certificate signed by that CA (mTLS): the workers use that to accept only the gateway (or whoever holds
a certificate from their CA). Without a certificate a server is plaintext, which the service logs at
start. Files are read once at start; a missing or unreadable one stops the process naming the setting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


def _read(path: Path | None, setting: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"invalid settings\n{setting}: cannot read {path} ({exc.strerror})") from None


@dataclass(frozen=True)
class ServerTls:
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None

    def credentials(self, service: str) -> grpc.ServerCredentials | None:
        """None (plaintext, logged as such) or the server credentials; SystemExit on a bad setting."""
        if self.cert_file is None and self.key_file is None:
            if self.client_ca_file is not None:
                raise SystemExit("invalid settings\ntls_client_ca_file: needs tls_cert_file and tls_key_file")
            log.warning("%s: plaintext gRPC (no tls_cert_file/tls_key_file): fine on a trusted local network only",
                        service)
            return None
        if self.cert_file is None or self.key_file is None:
            raise SystemExit("invalid settings\ntls_cert_file/tls_key_file: give both or neither")
        pair = (_read(self.key_file, "tls_key_file"), _read(self.cert_file, "tls_cert_file"))
        client_ca = _read(self.client_ca_file, "tls_client_ca_file")
        log.info("%s: TLS%s", service, " with client certificates required (mTLS)" if client_ca else "")
        return grpc.ssl_server_credentials([pair], root_certificates=client_ca,
                                           require_client_auth=client_ca is not None)


@dataclass(frozen=True)
class ClientTls:
    """How a process dials a TLS server: the CA that signed the server's certificate, and for mTLS its own
    certificate and key."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    prefix: str = "worker_tls_"

    @property
    def enabled(self) -> bool:
        return self.ca_file is not None

    def credentials(self) -> grpc.ChannelCredentials | None:
        if self.ca_file is None:
            if self.cert_file is not None or self.key_file is not None:
                raise SystemExit(f"invalid settings\n{self.prefix}ca_file: needed with a client certificate")
            return None
        if (self.cert_file is None) != (self.key_file is None):
            raise SystemExit(f"invalid settings\n{self.prefix}cert_file/{self.prefix}key_file: give both or neither")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, f"{self.prefix}ca_file"),
            private_key=_read(self.key_file, f"{self.prefix}key_file"),
            certificate_chain=_read(self.cert_file, f"{self.prefix}cert_file"))


def channel(target: str, tls: ClientTls | None, options=None, interceptors=None) -> grpc.aio.Channel:
    """An asyncio channel to `target`, TLS when `tls` names a CA."""
    credentials = tls.credentials() if tls is not None else None
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)

