"""One Settings object, read from DRONEFLOW_* environment variables, built once in `main`."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.broker.queues import Queues


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRONEFLOW_", extra="ignore")

    data_dir: Path = Path("droneflow-data")
    store_url: str = Field(default="", description="default: sqlite:///<data_dir>/droneflow.db")
    broker_url: str = "memory://"
    auth: Literal["token", "disabled"] | None = Field(
        default=None,
        description="unset: `token`, except `droneflow serve` on a loopback address (open)",
    )
    auth_public_key_file: Path | None = None
    auth_public_key: SecretStr | None = Field(default=None, description="PEM text")
    auth_private_key_file: Path | None = None
    auth_private_key: SecretStr | None = Field(default=None, description="PEM text")
    auth_secret_file: Path | None = None
    auth_secret: SecretStr | None = Field(default=None, description="HS256 instead of Ed25519")
    allowed_origins: str = Field(
        default="", description="comma-separated browser origins allowed for WebSockets and CORS"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="dispatcher/result-writer /healthz, /readyz and /metrics port",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one object per line, for log collectors"
    )
    access_log: bool = Field(default=False, description="log every HTTP request (uvicorn's)")

    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    max_frame_bytes: int = Field(default=1024 * 1024, gt=0)
    max_drone_capacity: int = Field(default=32, ge=1)
    ws_compression: bool = Field(
        default=False,
        description="accept permessage-deflate when a client offers it; off, an idle socket "
        "costs ~38 kB less (zlib state), and clients simply talk uncompressed",
    )

    # Limits (issue 8). The defaults sit well above what bench/loadgen.py needs: one app there
    # submits up to ~5,000 tasks/s over one socket, with at most a few hundred tasks waiting.
    task_rate_per_s: float = Field(
        default=10_000.0, gt=0, description="task submissions per app and s, per gateway process"
    )
    task_burst: int = Field(default=10_000, ge=1, description="submissions an app may make at once")
    max_pending_per_app: int = Field(
        default=10_000, ge=1, description="an app's tasks in status pending, over all gateways"
    )
    pending_count_cache_s: float = Field(
        default=1.0,
        ge=0,
        description="how long a gateway reuses an app's pending count read from the store",
    )
    max_connections_per_identity: int = Field(
        default=8, ge=1, description="live WebSockets per app or drone id, per gateway process"
    )
    ws_max_frames_per_s: float = Field(
        default=10_000.0, gt=0, description="frames a WebSocket may send per s (and at once)"
    )
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=20.0, gt=0)
    max_url_bytes: int = Field(default=8192, ge=64, description="longer request targets: 414")
    max_header_bytes: int = Field(default=65536, ge=1024, description="larger heads: 431")
    max_connections: int | None = Field(
        default=None,
        ge=1,
        description="per gateway process; unset: the open-file limit less a reserve",
    )

    default_timeout_s: float = Field(default=3600.0, gt=0)
    default_max_attempts: int = Field(default=3, ge=1)
    notification_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    aging_interval_s: float | None = Field(
        default=None, gt=0, description="raise a waiting task's priority by one per interval"
    )

    gateway_name: str | None = Field(
        default=None, description="how /api/drones names this gateway; unset: host:port"
    )
    presence_interval_s: float = Field(
        default=5.0, gt=0, description="how often a gateway re-announces its connections"
    )

    queue_prefix: str = Field(default="droneflow", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    sweep_interval_s: float = Field(default=1.0, gt=0)
    dispatch_grace_s: float = Field(default=2.0, ge=0)
    renotify_after_s: float = Field(
        default=10.0, gt=0, description="re-send a final state no app was sent after this long"
    )
    publish_timeout_s: float = Field(
        default=1.0, gt=0, description="longest wait for RabbitMQ to confirm a publish"
    )
    store_timeout_s: float = Field(
        default=1.0, gt=0, description="longest wait for MongoDB to be reachable (per operation)"
    )
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After of a 503")
    consumer_prefetch: int = Field(default=256, ge=1)
    shutdown_timeout_s: float = Field(default=10.0, ge=0)

    @model_validator(mode="after")
    def _derive_store_url(self) -> "Settings":
        if not self.store_url:
            self.store_url = f"sqlite:///{self.data_dir / 'droneflow.db'}"
        return self

    @property
    def queues(self) -> Queues:
        return Queues(self.queue_prefix, self.notification_ttl_s)
