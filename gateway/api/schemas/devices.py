"""Devices' bodies: registration, state, history, connection status (api/devices.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from registry.models import ConnectionStatus, Device, DeviceState

from .base import AppVersion, Attributes, Body, Id


class DeviceIn(Body):
    id: Id
    group: Id = "default"
    app_version: AppVersion | None = None
    attributes: Attributes = Field(default_factory=dict)


class DevicePatch(Body):
    group: Id | None = None
    app_version: AppVersion | None = None
    attributes: Attributes | None = None
    enabled: bool | None = None
    state: DeviceState | None = Field(None, description="an operator transition: provisioned -> registered")


class HistoryEntryOut(Body):
    at: datetime
    event: str
    detail: dict[str, Any]


class DeviceTombstoneOut(Body):
    id: str
    group: str
    app_version: str | None
    deleted_at: datetime


class DeviceOut(Body):
    id: str
    tenant: str
    group: str
    app_version: str | None
    attributes: dict[str, str]
    state: DeviceState
    enabled: bool
    auto_provisioned: bool
    created_at: datetime
    updated_at: datetime
    config_applied: str | None = Field(description="the group policy (config id) it last applied")
    config_assigned: str | None = Field(description="its group's current config id")
    policy_pending: bool = Field(description="its group's current policy is not the one it applied")
    config_error: dict[str, Any] | None = Field(description="its last failed apply")

    @classmethod
    def of(cls, d: Device) -> DeviceOut:
        return cls(
            id=d.id,
            tenant=d.tenant_id,
            group=d.group,
            app_version=d.app_version,
            attributes=d.attributes,
            state=d.state,
            enabled=d.enabled,
            auto_provisioned=d.auto_provisioned,
            created_at=d.created_at,
            updated_at=d.updated_at,
            config_applied=d.config_applied,
            config_assigned=d.config_assigned,
            policy_pending=d.policy_pending,
            config_error=d.config_error,
        )


class DevicePageOut(Body):
    devices: list[DeviceOut]
    next: str | None = Field(description="pass as `after` for the next page; null on the last")


class LogEntryOut(Body):
    at: datetime
    event: str
    reason: str | None
    detail: str | None
    client_id: str | None
    remote_address: str | None
    node: str | None


class ConnectionOut(Body):
    connected: bool
    sessions: int
    last_connected_at: datetime | None
    last_disconnected_at: datetime | None
    remote_address: str | None
    node: str | None
    log: list[LogEntryOut]

    @classmethod
    def of(cls, s: ConnectionStatus) -> ConnectionOut:
        return cls(
            connected=s.connected,
            sessions=s.sessions,
            last_connected_at=s.last_connected_at,
            last_disconnected_at=s.last_disconnected_at,
            remote_address=s.remote_address,
            node=s.node,
            log=[LogEntryOut(**e.model_dump()) for e in s.log],
        )


class ConnectedDeviceOut(Body):
    id: str
    sessions: int
    node: str
    connected_since: datetime


class ConnectedDevicesOut(Body):
    devices: list[ConnectedDeviceOut]
    next: str | None
    """Pass as `after` for the next page; null on the last page."""
