"""Our plugins inside a stock amqtt broker: the services `mqtt-gateway serve` would hand them,
opened once per registry file from the plugin's own config (docs/amqtt-plugins.md).

What a stock broker gets: token and password authentication against the registry, with the failure
throttle, and the topic ACL. Everything else (certificate authentication and auto-provisioning,
10/EPMP, connection status, events, the session bounds and the six defect fixes) needs the
gateway's own broker.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from registry import Registry

from ..auth.hashing import PasswordHasher
from ..ops.metrics import Metrics
from .context import GatewayServices
from .settings import load_settings

_opened: dict[Path, GatewayServices] = {}
_lock = asyncio.Lock()


async def stock_services(registry_path: str) -> GatewayServices:
    """The services over `registry_path` (an existing registry: a stock broker never creates one)."""
    path = await asyncio.to_thread(lambda: Path(registry_path).expanduser().resolve())
    async with _lock:
        services = _opened.get(path)
        if services is None:
            if not await asyncio.to_thread(path.is_file):
                raise FileNotFoundError(f"no gateway registry at {path}")
            settings = load_settings(data_dir=path.parent)
            registry = Registry(path, connection_log_limit=settings.connection_log_limit)
            await registry.open()
            services = GatewayServices(
                settings=settings,
                registry=registry,
                hasher=PasswordHasher(settings.password_hash_workers),
                metrics=Metrics(),
            )
            _opened[path] = services
        return services


async def close_stock_services() -> None:
    async with _lock:
        for services in _opened.values():
            await services.registry.close()
        _opened.clear()
