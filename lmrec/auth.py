"""Who may call the public API: bearer tokens with roles, checked by one server interceptor, and a
per-token rate limit.

Tokens are never stored: the token file holds, per line, a name, its role and the SHA-256 of the token
(`lmrec token new` writes such a line):

    # name   role   sha256 of the token
    app      write  sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08

Roles nest: `read` (Recommend, GetItems) < `write` (UpsertItems, DeleteItems, RecordFeedback) < `admin`
(GetUserHistory, DeleteUserData). A method the table does not name needs `admin` (fail closed). The
file is re-read when it changes. Health and reflection are never checked.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

ROLES = ("read", "write", "admin")
ANONYMOUS = "anonymous"
# Checked no more often than this: a token file changed on disk takes effect within it.
RELOAD_CHECK_S = 1.0

_principal: contextvars.ContextVar[str] = contextvars.ContextVar("lmrec_principal", default=ANONYMOUS)


def current_principal() -> str:
    """The name of the token the current call was made with (audit log); "anonymous" without auth."""
    return _principal.get()


def token_hash(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    def may(self, needed: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed)


def parse_tokens(text: str, source: str) -> dict[str, Principal]:
    """{hash: principal} from token lines (newlines or ';' between entries); ValueError naming the line."""
    out: dict[str, Principal] = {}
    entries = [(n, entry) for n, line in enumerate(text.splitlines(), 1) for entry in line.split("#", 1)[0].split(";")]
    for number, line in entries:
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or parts[1] not in ROLES or not parts[2].startswith("sha256:") or len(parts[2]) != 71:
            raise ValueError(f"{source} line {number}: expected 'name role sha256:<64 hex>' with role one of "
                             f"{', '.join(ROLES)}")
        out[parts[2]] = Principal(parts[0], parts[1])
    return out


class TokenStore:
    """Token hashes from a file (re-read when it changes) and/or inline lines (the environment)."""

    def __init__(self, path: Path | None = None, inline: str = "") -> None:
        self.path = path
        self._inline = parse_tokens(inline, "auth_tokens") if inline else {}
        self._lock = threading.Lock()
        self._file: dict[str, Principal] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        if path is not None:
            self._reload(force=True)

    def __len__(self) -> int:
        return len(self._inline) + len(self._file)

    def lookup(self, token: str) -> Principal | None:
        self._reload()
        digest = token_hash(token)
        return self._inline.get(digest) or self._file.get(digest)

    def _reload(self, force: bool = False) -> None:
        if self.path is None or (not force and time.monotonic() - self._checked < RELOAD_CHECK_S):
            return
        with self._lock:
            self._checked = time.monotonic()
            try:
                stat = self.path.stat()
            except OSError as exc:
                if force:
                    raise ValueError(f"auth_tokens_file {self.path}: {exc.strerror}") from None
                log.warning("token file %s unreadable (%s); keeping the tokens loaded before", self.path, exc.strerror)
                return
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp:
                return
            try:
                tokens = parse_tokens(self.path.read_text(encoding="utf-8"), str(self.path))
            except ValueError:
                if force:
                    raise
                log.exception("token file %s invalid; keeping the tokens loaded before", self.path)
                return
            self._file, self._stamp = tokens, stamp
            if not force:
                log.info("token file %s reloaded: %d tokens", self.path, len(tokens))


def ensure_admin_token(directory: Path) -> tuple[Path, Path]:
    """For a system started with no tokens configured: an admin token in `directory/admin.token` (mode
    0600, made once) and the token file naming it; returns (token file, admin token path)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    token_path = directory / "admin.token"
    if not token_path.exists():
        fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    token = token_path.read_text().strip()
    tokens_file = directory / "tokens"
    line = f"admin admin {token_hash(token)}\n"
    if not tokens_file.exists() or line not in tokens_file.read_text():
        tmp = tokens_file.with_suffix(".tmp")
        tmp.write_text("# name role sha256 (lmrec/auth.py); written for the generated admin token\n" + line)
        os.chmod(tmp, 0o600)
        os.replace(tmp, tokens_file)
    return tokens_file, token_path


class TokenBucket:
    """`rate` calls a second per principal, bursts up to `burst`; one event loop calls it, no lock."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, max(burst, 1.0)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 when the call may go ahead, else the seconds until it could."""
        now = time.monotonic()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token of every call to `service` (a full service name) against `tokens` and the
    role `method_roles` names for the method (admin where it names none); rate-limits per token."""

    def __init__(self, tokens: TokenStore, service: str, method_roles: Mapping[str, str],
                 limiter: TokenBucket | None = None) -> None:
        self.tokens, self.prefix, self.limiter = tokens, f"/{service}/", limiter
        self.method_roles = {f"/{service}/{m}": role for m, role in method_roles.items()}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or not method.startswith(self.prefix):
            return handler
        inner, needed = handler.unary_unary, self.method_roles.get(method, "admin")

        async def checked(request, context: grpc.aio.ServicerContext):
            principal = self._authenticate(context)
            if principal is None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                    "missing or unknown bearer token (metadata 'authorization: Bearer <token>')")
            if not principal.may(needed):
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"token '{principal.name}' has role {principal.role}; "
                                    f"{method.rsplit('/', 1)[-1]} needs {needed}")
            if self.limiter is not None and (wait := self.limiter.take(principal.name)):
                message = f"rate limit of token '{principal.name}' reached; retry in {wait:.2f}s"
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message,
                                    trailing_metadata=_retry_info(wait, message))
            reset = _principal.set(principal.name)
            try:
                return await inner(request, context)
            finally:
                _principal.reset(reset)

        return grpc.unary_unary_rpc_method_handler(
            checked, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    def _authenticate(self, context) -> Principal | None:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    return self.tokens.lookup(token.strip())
        return None


def _retry_info(wait_s: float, message: str) -> tuple[tuple[str, bytes], ...]:
    """google.rpc.RetryInfo in the status details, the standard way to tell a client when to retry."""
    from google.protobuf import any_pb2, duration_pb2
    from google.rpc import code_pb2, error_details_pb2, status_pb2

    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(wait_s * 1e9))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=[detail])
    return (("grpc-status-details-bin", status.SerializeToString()), ("retry-after-ms", str(int(wait_s * 1000) + 1)))



def local_token_env(name: str = "local") -> dict[str, str]:
    """Environment for a system started by a test or a benchmark and its clients: a fresh admin token
    that the gateway accepts (LMREC_GATEWAY_AUTH_TOKENS) and our clients send (LMREC_TOKEN)."""
    token = secrets.token_urlsafe(24)
    return {"LMREC_TOKEN": token, "LMREC_GATEWAY_AUTH_TOKENS": f"{name} admin {token_hash(token)}"}
