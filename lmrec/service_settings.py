"""Settings every service process shares (each service's env prefix applies: LMREC_RANKING_DRAIN_S)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from lmrec.tls import ServerTls

# The default gRPC ports (retrieval shard i listens on RETRIEVAL_PORT + 10 * i), declared once.
GATEWAY_PORT, RANKING_PORT, RETRIEVAL_PORT = 50051, 50052, 50053
GATEWAY_TARGET = f"127.0.0.1:{GATEWAY_PORT}"


def port_field(default: int):
    """Each service's gRPC `port`: its own default, 0 for any free one (say which with `port_file`)."""
    return Field(default, ge=0, le=65535)


def metrics_port_field(default: int):
    """Each service's `metrics_port`: its own default port, the same meaning everywhere."""
    return Field(default, ge=-1, le=65535,
                 description=f"Prometheus /metrics port (default {default}; 0 = any free port, -1 = off)")


class ServingSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = port_field(0)  # each service declares its default
    # Written (atomically) with the bound port once serving; lets a supervisor (or a test) use port 0.
    port_file: Path | None = Field(None, description="write the bound port here once serving")
    # TLS (lmrec/tls.py), PEM files. Unset: plaintext, logged at start. tls_client_ca_file: demand client
    # certificates signed by it (mTLS).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # On SIGTERM: report NOT_SERVING at once, keep answering for drain_s (load balancers and the gateway's
    # health checks move away meanwhile), then stop taking calls and give those in flight grace_seconds.
    drain_s: float = Field(0.0, ge=0, le=600)
    grace_seconds: float = Field(5.0, ge=0)
    # Written (atomically) with the bound metrics port once serving; lets a supervisor use metrics_port 0.
    metrics_port_file: Path | None = None
    # Traces (lmrec/tracing.py). A caller's traceparent decides sampling for the traces it started.
    otlp_endpoint: str | None = Field(
        None, examples=["http://127.0.0.1:4317"],
        description="OTLP/gRPC trace collector, http:// (plaintext) or https:// (TLS) (default: no tracing)")
    trace_sample_ratio: float = Field(1.0, ge=0, le=1,
                                      description="share of the traces started here that are kept (default 1.0)")

    def server_tls(self) -> ServerTls:
        return ServerTls(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_url(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith(("http://", "https://")) and len(value.split("://", 1)[1]) > 0):
            raise ValueError("must be an http:// (plaintext) or https:// (TLS) URL, e.g. http://otel-collector:4317")
        return value
