"""How our own clients (CLI, load generator, evaluation harness) dial the public API: the bearer token
from LMREC_TOKEN (or LMREC_TOKEN_FILE, or a local `lmrec serve`'s generated one), TLS when LMREC_TLS_CA
names the CA that signed the gateway's certificate."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

TOKEN_ENV, TOKEN_FILE_ENV, CA_ENV = "LMREC_TOKEN", "LMREC_TOKEN_FILE", "LMREC_TLS_CA"


# Where a local `lmrec serve` (default --state-dir var) has the gateway write its admin token when no token
# is configured: our clients run from the same directory find it without any setup.
LOCAL_ADMIN_TOKEN = Path("var/gateway/tokens/admin.token")


def token_from_env(local_fallback: bool = True) -> str | None:
    """LMREC_TOKEN, else the file LMREC_TOKEN_FILE names, else a local `lmrec serve`'s generated token."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token and os.environ.get(TOKEN_FILE_ENV):
        token = Path(os.environ[TOKEN_FILE_ENV]).read_text().strip()
    if not token and local_fallback and TOKEN_ENV not in os.environ and LOCAL_ADMIN_TOKEN.is_file():
        token = LOCAL_ADMIN_TOKEN.read_text().strip()
    return token or None


def call_metadata(token: str | None = None) -> tuple[tuple[str, str], ...]:
    token = token or token_from_env()
    return (("authorization", f"Bearer {token}"),) if token else ()


def _credentials(ca_file: str | None) -> grpc.ChannelCredentials | None:
    ca_file = ca_file or os.environ.get(CA_ENV)
    return grpc.ssl_channel_credentials(Path(ca_file).read_bytes()) if ca_file else None


class _Metadata(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, metadata) -> None:
        self.metadata = tuple(metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(details._replace(metadata=(*(details.metadata or ()), *self.metadata)), request)


def gateway_channel(target: str, token: str | None = None, ca_file: str | None = None) -> grpc.Channel:
    """A blocking channel whose every call carries the token (LMREC_TOKEN when not given)."""
    credentials = _credentials(ca_file)
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    metadata = call_metadata(token)
    return grpc.intercept_channel(channel, _Metadata(metadata)) if metadata else channel


def gateway_aio_channel(target: str, token: str | None = None, ca_file: str | None = None,
                        options=None) -> grpc.aio.Channel:
    """The asyncio twin of `gateway_channel`."""
    credentials = _credentials(ca_file)
    metadata = call_metadata(token)
    interceptors = [_AioMetadata(metadata)] if metadata else None
    if credentials:
        return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)


class _AioMetadata(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, metadata) -> None:
        self.metadata = tuple(metadata)

    async def intercept_unary_unary(self, continuation, details, request):
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *self.metadata)
        return await continuation(details._replace(metadata=metadata), request)
