"""Typed settings of the Ray Serve ranking tier: the worker's settings plus replicas, resources, Ray."""

from __future__ import annotations

from pydantic import Field, model_validator

from ranking_service.settings import RankingSettings


class RayRankingSettings(RankingSettings):
    """Read from flags, then `LMREC_RANKING_*` environment, then defaults, like the plain worker's."""

    # Ray cluster to join ("auto", "127.0.0.1:6379", a GCS address); unset starts a local one in-process.
    ray_address: str | None = Field(None, description="join this Ray cluster (default: start a local one)")
    # CPUs the local cluster may use (unset: all of this machine's); ignored when joining a cluster.
    ray_num_cpus: int | None = Field(None, ge=1, description="CPUs of the local cluster")
    app_name: str = "lmrec-ranking"
    # True: deploy the application (serve.run); False: attach to one deployed elsewhere (KubeRay serveConfigV2).
    deploy: bool = True
    num_replicas: int = Field(2, ge=1)
    # Autoscaling on ongoing requests (queued + running) per replica, between min and max replicas.
    autoscaling: bool = False
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    target_ongoing_requests: float = Field(16.0, gt=0)
    # Requests one replica holds at once; >1 lets its micro-batcher merge concurrent calls.
    max_ongoing_requests: int = Field(64, ge=1)
    replica_num_cpus: float = Field(1.0, ge=0)
    # None: one GPU per replica when the cluster has GPUs, else none.
    replica_num_gpus: float | None = Field(None, ge=0, description="default: 1 when the cluster has GPUs, else 0")
    # Budget for calls that arrive without a deadline.
    default_timeout_s: float = Field(30.0, gt=0)
    # Pause between a replica dying under a call and sending the call again.
    retry_backoff_ms: float = Field(20.0, ge=0)

    @model_validator(mode="after")
    def _replica_range(self) -> "RayRankingSettings":
        if self.autoscaling and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self
