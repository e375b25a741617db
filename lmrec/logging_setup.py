"""One logging format for every lmrec process: text, or JSON lines for a log collector; each line carries the
trace id of the request it was written for ("-" outside one, or with tracing off: lmrec/tracing.py).

Set by environment for every process alike (`lmrec serve` passes it to the services it starts), read before
any service settings, so the first lines are already in the chosen format.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lmrec import tracing


class LoggingSettings(BaseSettings):
    """LMREC_LOG_LEVEL, LMREC_LOG_JSON."""

    model_config = SettingsConfigDict(env_prefix="LMREC_LOG_", extra="ignore")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # One JSON object per line (time, level, service, logger, message, trace_id, span_id, exception).
    json_lines: bool = Field(False, validation_alias="LMREC_LOG_JSON")

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value):
        return value.upper() if isinstance(value, str) else value


class TraceIds(logging.Filter):
    """Adds `trace_id` and `span_id` to every record: the span current where the line was logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = tracing.current_ids()
        record.trace_id, record.span_id = ids if ids else ("-", "-")
        return True


class JsonLines(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname, "service": self.service, "logger": record.name,
                "message": record.getMessage(), "trace_id": getattr(record, "trace_id", "-"),
                "span_id": getattr(record, "span_id", "-")}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(service: str) -> None:
    try:
        settings = LoggingSettings()
    except ValidationError as exc:
        raise SystemExit(f"lmrec-{service}: invalid settings\n{exc}") from None
    handler = logging.StreamHandler()
    handler.addFilter(TraceIds())
    handler.setFormatter(JsonLines(service) if settings.json_lines else logging.Formatter(
        f"%(asctime)s %(levelname)s {service} %(name)s [trace %(trace_id)s]: %(message)s"))
    logging.basicConfig(level=settings.level, handlers=[handler])
