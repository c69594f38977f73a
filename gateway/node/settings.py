"""Gateway settings: defaults < TOML file (`--config`) < `GATEWAY_*` environment < command-line flags."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pki.names import LOOPBACK_NAMES, is_server_name

Port = int


class SettingsError(Exception):
    """Invalid settings. `problems` has one line per problem, naming the setting; the message joins them."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


class GatewaySettings(BaseSettings):
    """Everything `mqtt-gateway serve` can be told. Port 0 means: pick a free port."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="forbid", validate_default=True)

    data_dir: Path = Field(Path("gateway-data"), description="registry, TLS material, admin token")
    host: str = Field("127.0.0.1", min_length=1, description="address every listener binds to")
    mqtt_port: Port = Field(1883, ge=0, le=65535)
    mqtts_port: Port = Field(8883, ge=0, le=65535)
    tls_enabled: bool = True
    tls_cert_file: Path | None = Field(
        None,
        description="your server certificate (PEM; intermediates after it) for mqtts and wss; unset: the"
        " generated development one. Re-read on SIGHUP",
    )
    tls_key_file: Path | None = Field(None, description="the private key of tls_cert_file (PEM, not encrypted)")
    tls_server_names: list[str] = Field(
        default_factory=lambda: list(LOOPBACK_NAMES),
        description="DNS names and IP addresses the generated development server certificate covers",
    )
    api_tls: bool = Field(False, description="HTTPS on the API port, with the server certificate by default")
    api_tls_cert_file: Path | None = Field(None, description="a certificate of its own for the API (PEM)")
    api_tls_key_file: Path | None = Field(None, description="the private key of api_tls_cert_file")
    ws_port: Port | None = Field(None, ge=0, le=65535, description="MQTT over WebSocket; off unless set")
    wss_port: Port | None = Field(
        None, ge=0, le=65535, description="MQTT over WebSocket and TLS (mqtts' certificate and checks); off unless set"
    )
    ws_path: str = Field(
        "/mqtt",
        max_length=256,
        pattern=r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$",
        description="the request path of the WebSocket listeners",
    )
    api_port: Port = Field(8080, ge=0, le=65535)
    api_docs_public: bool = Field(
        False, description="serve /docs and /openapi.json without the admin token (they describe, never act)"
    )
    node_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        pattern=r"^[A-Za-z0-9._~-]+$",
        description="names this gateway node in the registry; must be stable across restarts",
    )
    connect_timeout: float = Field(10.0, gt=0, le=300, description="seconds a socket may stay silent before CONNECT")
    max_connections: int = Field(10_000, ge=1, description="beyond this, new sockets are closed at once")
    max_packet_bytes: int = Field(
        1_048_576, ge=1024, le=268_435_455, description="an MQTT packet larger than this closes the connection"
    )
    packet_timeout: float = Field(
        30.0, gt=0, le=3600, description="seconds from a packet's first byte to its last, whatever the keep-alive"
    )
    max_partial_packet_bytes: int = Field(
        67_108_864,
        ge=1024,
        description="bytes of partly received packets and WebSocket frames on this node; the connection that"
        " would exceed it is closed",
    )
    tenant_partial_packets_share: float = Field(
        0.5, gt=0, le=1, description="of max_partial_packet_bytes, what one tenant's connections may hold"
    )
    epmx_whitelist: Path | None = Field(None, description="EPMX metadata whitelist (YAML, Kaa format)")
    epmp_extension: str = Field("epmx", pattern=r"^[A-Za-z0-9._~-]{1,64}$", description="10/EPMP extension name")
    epmp_max_payload_bytes: int = Field(65_536, ge=16, description="larger 10/EPMP requests get 413")
    epmp_max_keys: int = Field(256, ge=1, description="metadata keys per device")
    epmp_max_value_bytes: int = Field(16_384, ge=16, description="one metadata value, as compact JSON")
    epmp_max_key_length: int = Field(128, ge=1, le=4096)
    epmp_max_pending: int = Field(
        100,
        ge=1,
        description="10/EPMP and 11/CEP requests (and command invocations of one application) queued per device"
        " or account, all its connections together; more get 429",
    )
    epmp_writes_per_second: float = Field(
        10.0,
        gt=0,
        description="10/EPMP writes (update, update/keys, delete/keys) one device may send per second"
        " on average; beyond, 429",
    )
    epmp_write_burst: int = Field(100, ge=1, description="10/EPMP writes one device may send in a burst")
    event_retention_hours: float = Field(168.0, gt=0, description="undelivered outbox events are kept this long")
    event_delivered_retention_seconds: float = Field(
        300.0, gt=0, le=86_400, description="delivered outbox events are pruned this long after their delivery"
    )
    event_max_bytes: int = Field(
        131_072, ge=4096, description="one event's JSON; a larger one leaves out its largest fields (`omitted`)"
    )
    event_backlog_max_bytes: int = Field(
        67_108_864,
        ge=65_536,
        description="a tenant's outbox; over half, events of one kind and device are coalesced, at it the oldest"
        " are dropped (docs/epmp.md#bounds)",
    )
    connection_log_limit: int = Field(100, ge=1, le=100_000, description="connection log rows kept per device")
    api_max_body_bytes: int = Field(1_048_576, ge=1024)
    password_hash_workers: int = Field(
        2,
        ge=1,
        le=64,
        description="concurrent password verifications (plus one for devices returning from a known address)",
    )
    password_queue_deadline: float = Field(
        0.25, gt=0, le=30, description="seconds a password CONNECT may wait for an argon2 worker before it is refused"
    )
    auth_failures_per_username_and_address: int = Field(
        5,
        ge=1,
        description="failed password CONNECTs for one username from one source address; then that address's"
        " attempts at it get CONNACK 3 without argon2 (bucket size; below auth_failures_per_username)",
    )
    auth_failures_per_username: int = Field(
        10,
        ge=1,
        description="failed password CONNECTs per username from addresses it has not logged in from (bucket size)",
    )
    auth_failures_per_address: int = Field(
        100,
        ge=1,
        description="failed CONNECTs per source address, of credentials that have not connected from it before"
        " (bucket size)",
    )
    auth_failure_refill_per_minute: float = Field(
        10.0, gt=0, description="failures forgiven per minute, per username, address, and username-and-address bucket"
    )
    auth_failures_overall: int = Field(
        200,
        ge=1,
        description="failed password checks on this node, of usernames not known at their address: bounds"
        " argon2's CPU (bucket size; above auth_failures_per_address)",
    )
    auth_failures_overall_per_second: float = Field(
        5.0, gt=0, description="failures forgiven per second in the node-wide bucket (~15 ms of argon2 each)"
    )
    # -- the admin-token login forms (/ui/login, /docs/login) ------------------------------------------
    login_failures_per_address: int = Field(
        10,
        ge=1,
        description="wrong admin tokens per source address, of browsers that have not logged in before (bucket size)",
    )
    login_failures_per_browser: int = Field(
        10, ge=1, description="wrong admin tokens from a browser that logged in before (its cookie), from anywhere"
    )
    login_failures_overall: int = Field(
        100,
        ge=1,
        description="wrong admin tokens from all addresses together, of browsers that have not logged in"
        " before (bucket size; above login_failures_per_address)",
    )
    login_failure_refill_per_minute: float = Field(
        10.0, gt=0, description="wrong tokens forgiven per minute, per address and per browser"
    )
    login_failure_overall_refill_per_minute: float = Field(
        60.0, gt=0, description="wrong tokens forgiven per minute in the bucket of all addresses"
    )
    # -- admission ------------------------------------------------------------------------------
    max_pending_connects_per_address: int = Field(
        128, ge=1, description="sockets of one source address that have not completed CONNECT (mind NAT)"
    )
    max_sessions_per_device: int = Field(
        4, ge=1, description="sessions (connected or kept for a persistent client) of one device"
    )
    tenant_connections_share: float = Field(
        0.5, gt=0, le=1, description="of max_connections, what a tenant without its own maxConnections may hold"
    )
    # -- per-session bounds ---------------------------------------------------------------------
    max_subscriptions_per_session: int = Field(100, ge=1, description="topic filters one session may hold")
    max_qos2_awaiting_pubrel: int = Field(
        32, ge=1, le=65535, description="incoming QoS 2 messages awaiting PUBREL; one more closes the connection"
    )
    max_inflight_messages: int = Field(
        32, ge=1, le=65535, description="outgoing QoS 1/2 messages sent and not yet acknowledged, per session"
    )
    max_queued_messages: int = Field(
        1000, ge=1, description="messages waiting for a session that does not read (or is offline)"
    )
    max_queued_bytes: int = Field(8_388_608, ge=1024, description="payload bytes waiting for one session")
    reader_turn_ms: float = Field(
        2.0, gt=0, le=1000, description="ms of work on one connection's packets before its reader lets the others run"
    )
    reader_ms_per_second: float = Field(
        100.0,
        gt=0,
        description="ms of event loop one device's expensive packets may take per second on average"
        " (what each takes beyond 0.1 ms: a publish fanned out to hundreds of its own filters); beyond, its"
        " connections are read on only once it is back in credit",
    )
    reader_burst_ms: float = Field(500.0, gt=0, description="...and in a burst")
    reader_bytes_per_second: int = Field(
        16_777_216,
        ge=1024,
        description="MQTT bytes one device or service account may send per second on average"
        " (all its connections); beyond, they are read on only once it is back in credit",
    )
    reader_burst_bytes: int = Field(67_108_864, ge=1024, description="...and in a burst")
    slow_consumer_timeout: float = Field(
        30.0, gt=0, le=3600, description="seconds a client may leave what we send unread before it is closed"
    )
    session_expiry_seconds: int = Field(
        86_400, ge=0, description="a persistent session's state is kept this long after its client left"
    )
    max_retained_per_device: int = Field(100, ge=0, description="retained messages one device may leave")
    max_retained_bytes_per_device: int = Field(1_048_576, ge=0, description="their payload bytes")
    max_retained_messages: int = Field(100_000, ge=0, description="retained messages on this node in total")
    max_retained_bytes: int = Field(67_108_864, ge=0, description="their payload bytes in total")
    tenant_retained_share: float = Field(
        0.5, gt=0, le=1, description="of both totals, what a tenant without retained limits of its own may hold"
    )
    # -- device data (2/DCP) and commands (11/CEP) ---------------------------------------------------
    data_max_payload_bytes: int = Field(65_536, ge=64, description="a larger 2/DCP data message gets 413")
    data_max_samples: int = Field(1000, ge=1, description="samples in one data message; more get 413")
    data_max_depth: int = Field(16, ge=1, le=32, description="JSON nesting of a data message; deeper gets 400")
    data_messages_per_second: float = Field(
        100.0, gt=0, description="data messages one device may send per second on average; beyond, 429"
    )
    data_burst: int = Field(200, ge=1, description="data messages one device may send in a burst")
    data_last_samples_max_bytes: int = Field(
        67_108_864, ge=0, description="memory for the last sample of each device (least recently updated go first)"
    )
    commands_max_outstanding: int = Field(
        100, ge=1, le=100_000, description="pending or delivered commands per device; more get 429"
    )
    commands_max_payload_bytes: int = Field(
        65_536, ge=64, description="a command's payload, or a device's result, as JSON; larger gets 413"
    )
    commands_per_minute: float = Field(
        600.0, gt=0, description="MQTT command invocations one service account may publish a minute; beyond, 429"
    )
    commands_burst: int = Field(100, ge=1, description="of those, how many may come at once")
    # -- what validating payloads may cost (issue 17 point 3) -------------------------------------------
    json_max_values: int = Field(
        10_000, ge=16, description="JSON values in one device payload or API body, counted before parsing; more get 413"
    )
    validation_ms_per_second: float = Field(
        50.0,
        gt=0,
        description="ms of event loop one device or service account may spend on validating its payloads"
        " per second on average; beyond, 429 without parsing",
    )
    validation_burst_ms: float = Field(250.0, gt=0, description="...and in a burst")
    validation_tenant_ms_per_second: float = Field(
        250.0, gt=0, description="the same for all devices and service accounts of a tenant together"
    )
    validation_tenant_burst_ms: float = Field(1000.0, gt=0, description="...and in a burst")
    # -- fleet management ---------------------------------------------------------------------------
    policy_max_bytes: int = Field(65_536, ge=64, description="a group's policy (7/CMP configuration), as JSON")
    import_max_bytes: int = Field(67_108_864, ge=1024, description="a CSV uploaded to POST .../device-imports")
    import_max_rows: int = Field(1_000_000, ge=1, description="data rows in one device import")
    import_max_held_password_bytes: int = Field(
        134_217_728,
        ge=0,
        description="memory for imported passwords waiting to be hashed, over all jobs (never stored in clear)",
    )
    # -- operations -----------------------------------------------------------------------------------
    metrics_public: bool = Field(
        False, description="GET /metrics without the admin token (a Prometheus on a trusted network)"
    )
    audit_retention_days: float = Field(90.0, gt=0, description="audit trail entries older than this are pruned")
    audit_max_rows: int = Field(
        200_000, ge=100, description="audit trail entries of management API writes kept; the oldest go first"
    )
    audit_max_invocation_rows: int = Field(
        200_000, ge=100, description="audit trail entries of applications' MQTT command invocations kept, apart"
    )
    audit_max_refusal_rows: int = Field(
        50_000, ge=100, description="counted refusals kept (one per source, actor, status and minute)"
    )
    audit_max_field_chars: int = Field(
        512, ge=64, le=65_536, description="a longer audit field (a target, a detail) is cut, its length noted"
    )
    audit_refusal_sources_per_minute: int = Field(
        100, ge=1, description="sources counted apart in one minute, per origin; the rest are counted as (others)"
    )
    api_unauthenticated_per_minute: float = Field(
        60.0, gt=0, description="API requests without the admin token per source address (IPv6: /64); beyond, 429"
    )
    api_unauthenticated_burst: int = Field(30, ge=1, description="of those, how many may come at once")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="any case: info, Info, INFO")
    log_format: Literal["text", "json"] = Field("text", description="json: every log line one JSON object")
    event_loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio",
        description="uvloop (the [fast] extra) speeds plain CONNECTs ~10-20% but slows TLS handshakes 2.5-20x"
        " (docs/benchmarks.md)",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("tls_server_names")
    @classmethod
    def _server_names(cls, names: list[str]) -> list[str]:
        if not names or len(names) > 100:
            raise ValueError("1 to 100 DNS names or IP addresses")
        for name in names:
            if not is_server_name(name):
                raise ValueError(f"{name!r} is neither a DNS name nor an IP address")
        return names

    @model_validator(mode="after")
    def _event_bounds(self) -> GatewaySettings:
        if self.event_backlog_max_bytes < 4 * self.event_max_bytes:
            raise ValueError("event_backlog_max_bytes must be at least 4 x event_max_bytes")
        return self

    @model_validator(mode="after")
    def _partial_packets_hold_one(self) -> GatewaySettings:
        if self.max_partial_packet_bytes * self.tenant_partial_packets_share < self.max_packet_bytes:
            raise ValueError(
                "max_partial_packet_bytes x tenant_partial_packets_share must be at least max_packet_bytes"
                " (one tenant's packet of that size)"
            )
        return self

    @model_validator(mode="after")
    def _certificate_pairs(self) -> GatewaySettings:
        for cert, key in (("tls_cert_file", "tls_key_file"), ("api_tls_cert_file", "api_tls_key_file")):
            if (getattr(self, cert) is None) != (getattr(self, key) is None):
                raise ValueError(f"{cert} and {key} go together: set both or neither")
        return self

    @model_validator(mode="after")
    def _one_address_cannot_empty_a_shared_budget(self) -> GatewaySettings:
        """A shared budget that one address could empty alone would let it lock everyone else out."""
        problems = []
        if self.auth_failures_per_username_and_address >= self.auth_failures_per_username:
            problems.append("auth_failures_per_username_and_address must be below auth_failures_per_username")
        if self.auth_failures_per_address >= self.auth_failures_overall:
            problems.append("auth_failures_per_address must be below auth_failures_overall")
        if self.auth_failure_refill_per_minute > 60 * self.auth_failures_overall_per_second:
            problems.append("auth_failure_refill_per_minute must not exceed 60 x auth_failures_overall_per_second")
        if self.login_failures_per_address >= self.login_failures_overall:
            problems.append("login_failures_per_address must be below login_failures_overall")
        if self.login_failure_refill_per_minute > self.login_failure_overall_refill_per_minute:
            problems.append("login_failure_refill_per_minute must not exceed login_failure_overall_refill_per_minute")
        if problems:
            raise ValueError("; ".join(problems) + " (one address alone must not empty a budget others share)")
        return self

    @field_validator("wss_port")
    @classmethod
    def _wss_needs_tls(cls, port: int | None, info: ValidationInfo) -> int | None:
        if port is not None and info.data.get("tls_enabled") is False:
            raise ValueError("wss needs tls_enabled = true")
        return port

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "registry.sqlite3"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin-token"

    @property
    def ports_path(self) -> Path:
        return self.data_dir / "ports.json"


def load_settings(config_file: Path | None = None, **overrides: Any) -> GatewaySettings:
    """Build settings; `overrides` are command-line flags (None = not given). Raises SettingsError."""
    flags = {k: v for k, v in overrides.items() if v is not None}
    if config_file is not None and not config_file.is_file():
        what = "is not a file" if config_file.exists() else "does not exist"
        raise SettingsError(f"config file {str(config_file)!r} {what}")
    source: type[GatewaySettings] = GatewaySettings
    if config_file is not None:

        class _FromFile(GatewaySettings):
            model_config = SettingsConfigDict(toml_file=config_file)

        source = _FromFile
    try:
        settings = source(**flags)
    except ValidationError as exc:
        raise SettingsError(*_problems(exc)) from None
    except ValueError as exc:  # TOML syntax errors (and bytes that are not UTF-8) are ValueError subclasses
        raise SettingsError(f"config file {str(config_file)!r}: {squeeze(str(exc))}") from None
    except OSError as exc:  # unreadable
        raise SettingsError(f"config file {str(config_file)!r}: {exc.strerror}") from None
    return settings


def _problems(exc: ValidationError) -> list[str]:
    parts = []
    for err in exc.errors():
        name = squeeze(".".join(str(p) for p in err["loc"]) or "settings", 80)
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown setting {name!r}")
        else:
            parts.append(f"invalid setting {name!r}: {err['msg']} (got {squeeze(repr(err.get('input')))})")
    return parts


def squeeze(text: str, limit: int = 200) -> str:
    """One line of at most `limit` characters: a problem is reported as one line, whatever the input."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
