"""Service settings from the environment (pydantic-settings); no singleton at import time."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from privacy_finetuner.ledger.db import DEFAULT_DATABASE_URL

__all__ = ["Settings", "get_settings"]


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """Everything the server, the workers and the CLI read from the environment.

    Field names work as keyword arguments (tests); the environment variable of each field is
    given in its description.
    """

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        validation_alias=_env("DATABASE_URL"),
        description="DATABASE_URL: SQLAlchemy URL; SQLite file by default, postgresql://… for PG.",
    )
    database_schema: str | None = Field(
        default=None,
        validation_alias=_env("PF_DATABASE_SCHEMA"),
        description="PF_DATABASE_SCHEMA: PostgreSQL schema (search_path) for all tables.",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=_env("REDIS_URL"),
        description="REDIS_URL: jobs go to an RQ queue; unset: an in-process runner thread.",
    )
    privacy_config: Path | None = Field(
        default=None,
        validation_alias=_env("PRIVACY_CONFIG"),
        description="PRIVACY_CONFIG: base job config (YAML) every submitted config is merged onto.",
    )
    sentry_dsn: SecretStr | None = Field(
        default=None,
        validation_alias=_env("SENTRY_DSN"),
        description="SENTRY_DSN: report errors to Sentry (needs sentry_sdk installed).",
    )
    operator_tenant: str = Field(
        default="system",
        validation_alias=_env("PF_OPERATOR_TENANT"),
        description="PF_OPERATOR_TENANT: admin keys of this tenant see all tenants in /metrics.",
    )
    queue_name: str = Field(default="privacy-finetuner", validation_alias=_env("PF_QUEUE_NAME"))
    runs_dir: Path = Field(default=Path("runs"), validation_alias=_env("PF_RUNS_DIR"))
    job_function: str = Field(
        default="privacy_finetuner.training:run_job",
        validation_alias=_env("PF_JOB_FUNCTION"),
        description="PF_JOB_FUNCTION: module:function that runs a training job.",
    )
    auto_migrate: bool = Field(default=True, validation_alias=_env("PF_AUTO_MIGRATE"))
    max_body_bytes: int = Field(
        default=262_144,
        ge=1024,
        validation_alias=_env("PF_MAX_BODY_BYTES"),
        description="PF_MAX_BODY_BYTES: largest request body accepted on any endpoint (413).",
    )
    max_guard_chars: int = Field(default=65_536, ge=1, validation_alias=_env("PF_MAX_GUARD_CHARS"))
    guard_strategies: list[str] = Field(
        default=["redact"], validation_alias=_env("PF_GUARD_STRATEGIES")
    )
    page_size_max: int = Field(default=200, ge=1, validation_alias=_env("PF_PAGE_SIZE_MAX"))
    auth_failure_limit: int = Field(
        default=20,
        ge=1,
        validation_alias=_env("PF_AUTH_FAILURE_LIMIT"),
        description="PF_AUTH_FAILURE_LIMIT: failed authentications per client per window → 429.",
    )
    auth_failure_window_s: float = Field(
        default=60.0, gt=0, validation_alias=_env("PF_AUTH_FAILURE_WINDOW")
    )
    key_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        validation_alias=_env("PF_KEY_CACHE_TTL"),
        description="PF_KEY_CACHE_TTL: seconds a verified key is cached (revocation delay).",
    )
    heartbeat_interval_s: float = Field(
        default=5.0, gt=0, validation_alias=_env("PF_HEARTBEAT_INTERVAL")
    )
    heartbeat_timeout_s: float = Field(
        default=30.0,
        gt=0,
        validation_alias=_env("PF_HEARTBEAT_TIMEOUT"),
        description="PF_HEARTBEAT_TIMEOUT: a running job without a heartbeat this long is reaped.",
    )
    reaper_interval_s: float = Field(
        default=10.0, gt=0, validation_alias=_env("PF_REAPER_INTERVAL")
    )
    max_job_attempts: int = Field(
        default=1,
        ge=1,
        validation_alias=_env("PF_MAX_JOB_ATTEMPTS"),
        description="PF_MAX_JOB_ATTEMPTS: >1 resumes a lost job from its checkpoint; 1 fails it.",
    )
    inprocess_workers: int = Field(default=1, ge=1, validation_alias=_env("PF_INPROCESS_WORKERS"))
    job_timeout_s: int = Field(default=86_400, ge=1, validation_alias=_env("PF_JOB_TIMEOUT"))
    log_level: str = Field(default="INFO", validation_alias=_env("PF_LOG_LEVEL"))
    log_requests: bool = Field(default=True, validation_alias=_env("PF_LOG_REQUESTS"))
    data_root: Path | None = Field(
        default=None,
        validation_alias=_env("PF_DATA_ROOT"),
        description="PF_DATA_ROOT: the only directory operator keys may register server paths "
        "under (resolved, no symlink escape); unset: registration by path is off.",
    )
    storage_root: Path = Field(
        default=Path("data/uploads"),
        validation_alias=_env("PF_STORAGE_ROOT"),
        description="PF_STORAGE_ROOT: where uploaded data files are stored (one folder per tenant).",
    )
    max_upload_bytes: int = Field(
        default=1 << 30,
        ge=1024,
        validation_alias=_env("PF_MAX_UPLOAD_BYTES"),
        description="PF_MAX_UPLOAD_BYTES: largest upload, compressed and decompressed (413).",
    )
    allowed_models: list[str] = Field(
        default=["tiny"],
        validation_alias=_env("PF_ALLOWED_MODELS"),
        description="PF_ALLOWED_MODELS: base models tenants may name ('tiny' and hub ids).",
    )
    allow_insecure_jobs: bool = Field(
        default=False,
        validation_alias=_env("PF_ALLOW_INSECURE_JOBS"),
        description="PF_ALLOW_INSECURE_JOBS: accept privacy.secure_mode false (test deployments).",
    )
    trusted_proxies: list[str] = Field(
        default=[],
        validation_alias=_env("PF_TRUSTED_PROXIES"),
        description="PF_TRUSTED_PROXIES: proxy addresses/CIDRs whose X-Forwarded-For is used.",
    )
    admission_timeout_s: float = Field(
        default=2.0,
        gt=0,
        validation_alias=_env("PF_ADMISSION_TIMEOUT"),
        description="PF_ADMISSION_TIMEOUT: seconds a submission's ε may take; then 422.",
    )
    api_docs: bool = Field(
        default=False,
        validation_alias=_env("PF_API_DOCS"),
        description="PF_API_DOCS: serve /docs and /openapi.json (off by default).",
    )
    noise_multiplier_floor: float | None = Field(
        default=None,
        gt=0,
        validation_alias=_env("PF_NOISE_MULTIPLIER_FLOOR"),
        description="PF_NOISE_MULTIPLIER_FLOOR: refuse jobs planning σ below it; exported.",
    )


def get_settings() -> Settings:
    """Read the settings from the environment now."""
    return Settings()
