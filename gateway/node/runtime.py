"""A running gateway node: registry, TLS material, the hardened broker and the management API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import uvicorn

from pki.devca import ServerTls, ensure_server_tls
from pki.files import write_public
from pki.names import server_names
from pki.server_cert import check_server_certificate
from registry import Registry

from ..api.app import create_app
from ..auth.hashing import PasswordHasher
from ..auth.identity import DeviceIdentity
from ..kp1.epmp import Epmp
from ..kp1.whitelist import load_whitelist
from ..mqtt.broker import GatewayBroker
from ..mqtt.connection import CloseReason
from ..mqtt.listener import ListenerSpec
from ..mqtt.local_reach import LocalReach
from ..mqtt.websocket import WebSocketOptions, message_limit
from ..ops.metrics import Metrics
from ..ops.prometheus import PrometheusExporter
from ..services.commands.service import CommandService
from ..services.data import DataCollection
from ..services.endpoint_filters import FilterEvaluator
from ..services.events import EventDispatcher
from ..services.imports import ImportRunner
from ..services.management import Management
from ..services.policies import PolicyService
from .admin_token import ensure_admin_token
from .config_check import certificate_warning
from .context import GatewayServices
from .datadir import DataDirLock, claim
from .settings import GatewaySettings
from .trust import TrustedCas

log = logging.getLogger(__name__)

PLUGINS: dict[str, dict[str, object]] = {
    "gateway.auth.plugin.DeviceAuthPlugin": {},
    "gateway.auth.acl.TopicAccessPlugin": {},
}


class _EmbeddedApiServer(uvicorn.Server):
    """uvicorn inside our loop: the gateway, not uvicorn, owns SIGINT/SIGTERM."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it (Linux): uvicorn writes a response's headers and body apart, and
    # Nagle held the body back for the client's delayed ACK, ~40 ms on every kept-alive request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot bind the API to {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.registry = Registry(
            settings.registry_path,
            connection_log_limit=settings.connection_log_limit,
            max_event_bytes=settings.event_max_bytes,
            event_backlog_max_bytes=settings.event_backlog_max_bytes,
        )
        self.services = GatewayServices(
            settings=settings,
            registry=self.registry,
            hasher=PasswordHasher(settings.password_hash_workers),
            metrics=Metrics(),
        )
        self.registry.audit.set_bounds(
            retention_days=settings.audit_retention_days,
            max_rows=settings.audit_max_rows,
            max_invocation_rows=settings.audit_max_invocation_rows,
            max_refusal_rows=settings.audit_max_refusal_rows,
            max_field_chars=settings.audit_max_field_chars,
        )
        self.registry.audit.on_pruned = self.services.metrics.audit_rows_pruned
        self.manage = Management(self)
        self.prometheus = PrometheusExporter(self, self.services.metrics)
        self.registry.db.observe = self.prometheus.observe_registry
        """Management writes with their side effects (closing sessions, reloading trust)."""
        self.broker: GatewayBroker | None = None
        self.reach: LocalReach | None = None
        self.events: EventDispatcher | None = None
        self.commands: CommandService | None = None
        self.imports: ImportRunner | None = None
        self.filters: FilterEvaluator | None = None
        self.tls: ServerTls | None = None
        self._api_ssl: ssl.SSLContext | None = None
        self.admin_token = ""
        self.admin_token_created = False
        self.ports: dict[str, int] = {}
        self._api: _EmbeddedApiServer | None = None
        self._api_task: asyncio.Task[None] | None = None
        self.api_socket: socket.socket | None = None
        self._data_dir_lock: DataDirLock | None = None

    async def start(self) -> None:
        """Claims the data directory first: a second gateway on it stops here (DataDirInUse), before it
        could close the first one's sessions in the registry or overwrite its ports.json."""
        self._data_dir_lock = claim(self.settings.data_dir)
        try:
            await self._start()
        except BaseException:
            # a start refused after the registry opened (a bad certificate): its threads must end too,
            # or the process would wait for them at exit instead of exiting with the error
            with contextlib.suppress(Exception):
                await self.registry.close()
            self._data_dir_lock.release()
            self._data_dir_lock = None
            raise

    async def _start(self) -> None:
        s = self.settings
        await self.registry.open()
        recovered = await self.registry.connections.recover_node(s.node_id, reason=CloseReason.RESTART)
        if recovered:
            log.warning(
                "marked %d session(s) left open by a previous run of node %s as not connected", recovered, s.node_id
            )
        self.admin_token, self.admin_token_created = ensure_admin_token(s.admin_token_path)
        self.services.epmp = Epmp(
            self.registry, s, load_whitelist(s.epmx_whitelist), self.services.validation, self.services.metrics
        )
        listeners = [ListenerSpec("mqtt", s.host, s.mqtt_port)]
        if s.tls_enabled or s.api_tls:
            self.tls = await self._server_tls()
        if s.tls_enabled:
            assert self.tls is not None
            if (warning := certificate_warning(s)) is not None:
                log.warning("%s", warning)
            self.services.trust = TrustedCas(self.registry, self.tls.cert_path, self.tls.key_path)
            await self.services.trust.reload()
            listeners.append(ListenerSpec("mqtts", s.host, s.mqtts_port, tls=self._server_ssl_context))
        websocket = WebSocketOptions(s.ws_path, message_limit(s.max_packet_bytes))
        if s.ws_port is not None:
            listeners.append(ListenerSpec("ws", s.host, s.ws_port, websocket=websocket))
        if s.wss_port is not None and s.tls_enabled:  # mqtts' context: its certificate, client certificates, trust
            listeners.append(ListenerSpec("wss", s.host, s.wss_port, tls=self._server_ssl_context, websocket=websocket))
        self.broker = GatewayBroker(self.services, PLUGINS)
        try:
            await self.broker.start(listeners)
        except Exception:
            await self.registry.close()
            raise
        self.reach = LocalReach(self.broker)
        self.services.data = DataCollection(s, self.services.metrics, self.reach, self.services.validation)
        for tenant in await self.registry.tenants.list():
            self.services.data.set_forwarded(tenant.id, tenant.forward_extensions)
        self.commands = CommandService(
            self.registry, s, self.services.metrics, self.reach, self.services.refusals, self.services.validation
        )
        self.services.commands = self.commands
        self.commands.start()
        self.services.policies = PolicyService(self.registry, s, self.reach, self.services.validation)
        self.imports = ImportRunner(self.registry, s, self.services.hasher)
        await self.imports.start()
        self.events = EventDispatcher(
            self.reach,
            self.registry,
            node=s.node_id,
            retention_hours=s.event_retention_hours,
            delivered_retention_seconds=s.event_delivered_retention_seconds,
        )
        self.events.start()
        self.filters = FilterEvaluator(self.registry, node=s.node_id)
        self.filters.start()
        self.ports = {spec.name: self.broker.bound_port(spec.name) for spec in listeners}
        try:
            await self._start_api()
        except Exception:  # the workers started above would go on against a closed registry
            await self.commands.stop()
            await self._stop_workers()
            await self.broker.shutdown()
            await self.registry.close()
            raise
        served = {"host": s.host, **self.ports, **({"api_tls": True} if s.api_tls else {})}
        write_public(s.ports_path, json.dumps(served, indent=2).encode())
        log.info(
            "gateway node %s up: %s",
            s.node_id,
            ", ".join(f"{name} {s.host}:{port}" for name, port in self.ports.items()),
        )

    def _server_ssl_context(self) -> ssl.SSLContext:
        assert self.services.trust is not None
        return self.services.trust.store.listener_context

    def reload_whitelist(self) -> None:
        """SIGHUP or `POST /v1/epmx/whitelist/reload`: re-read the EPMX whitelist; live sessions stay.
        A broken file keeps the whitelist in force and raises WhitelistError."""
        whitelist = load_whitelist(self.settings.epmx_whitelist)
        if self.services.epmp is not None:
            self.services.epmp.whitelist = whitelist
        log.info("EPMX whitelist reloaded: %d app version(s)", len(whitelist.versions))

    async def _server_tls(self, *, reissue: bool = False) -> ServerTls:
        """The server certificate in use: the operator's (checked first: a bad file stops here with one
        line), or the development one for `tls_server_names`, made or re-made when it does not cover them."""
        s = self.settings
        if s.tls_cert_file is not None and s.tls_key_file is not None:
            await asyncio.to_thread(check_server_certificate, s.tls_cert_file, s.tls_key_file)
            return ServerTls(None, s.tls_cert_file, s.tls_key_file)
        names = server_names(s.host, s.tls_server_names)
        tls = await asyncio.to_thread(ensure_server_tls, s.tls_dir, names, reissue=reissue)
        await asyncio.to_thread(check_server_certificate, tls.cert_path, tls.key_path)
        return tls

    def _api_certificate(self) -> tuple[Path, Path]:
        s = self.settings
        if s.api_tls_cert_file is not None and s.api_tls_key_file is not None:
            return s.api_tls_cert_file, s.api_tls_key_file
        assert self.tls is not None
        return self.tls.cert_path, self.tls.key_path

    async def reload_tls(self) -> None:
        """SIGHUP: the certificate files are read again; handshakes from now on present them, sessions
        already up stay. Raises ServerCertificateError (and changes nothing) for a file that cannot serve."""
        if self.tls is None:
            return
        tls = await self._server_tls()
        api_cert = None
        if self._api_ssl is not None:
            self.tls, previous = tls, self.tls
            try:
                api_cert = self._api_certificate()
                await asyncio.to_thread(check_server_certificate, *api_cert)
            except BaseException:
                self.tls = previous
                raise
        if self.services.trust is not None:
            self.services.trust.store.use_certificate(tls.cert_path, tls.key_path)
        if self._api_ssl is not None and api_cert is not None:
            self._api_ssl.load_cert_chain(*api_cert)
        self.tls = tls
        log.info("TLS certificate reloaded: %s", tls.cert_path)

    async def reload_trust(self) -> None:
        """After any change to trusted CAs or tenants: new handshakes see it at once."""
        if self.services.trust is not None:
            await self.services.trust.reload()

    async def _start_api(self) -> None:
        sock = self.api_socket = _bind(self.settings.host, self.settings.api_port)
        app = create_app(self, self.admin_token)
        cert, key = self._api_certificate() if self.settings.api_tls else (None, None)
        config = uvicorn.Config(
            app, lifespan="off", log_level="warning", access_log=False, ssl_certfile=cert, ssl_keyfile=key
        )
        if cert is not None:  # our hold on its context, to load a new certificate into on SIGHUP
            await asyncio.to_thread(check_server_certificate, *self._api_certificate())
            config.load()
            self._api_ssl = config.ssl
        self._api = _EmbeddedApiServer(config)
        self._api_task = asyncio.create_task(self._api.serve(sockets=[sock]))
        while not self._api.started:
            if self._api_task.done():
                self._api_task.result()
                raise RuntimeError("the management API stopped during start-up")
            await asyncio.sleep(0.01)
        self.ports["api"] = int(sock.getsockname()[1])

    async def kick(self, match: Callable[[DeviceIdentity], bool], detail: str) -> int:
        """Closes the matching live sessions now (revocation, disable, delete)."""
        if self.reach is None:
            return 0
        return await self.reach.kick(match, detail)

    async def _stop_workers(self) -> None:
        """The background tasks that write the registry: events, filters, imports."""
        if self.events is not None:
            await self.events.stop()
        if self.filters is not None:
            await self.filters.stop()
        if self.imports is not None:  # a chunk being written is rolled back; a restart resumes the job
            await self.imports.stop()

    async def stop(self) -> None:
        if self.commands is not None:  # first: REST calls waiting for a result are answered (503) at once
            await self.commands.stop()
        if self._api is not None and self._api_task is not None:
            self._api.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._api_task, timeout=10)
        await self._stop_workers()
        if self.broker is not None:
            await self.broker.shutdown()
        await self.services.refusals.close()  # what the API and the broker counted, before the registry closes
        await self.registry.close()
        if self._data_dir_lock is not None:
            self._data_dir_lock.release()
            self._data_dir_lock = None
        log.info("gateway node %s stopped", self.settings.node_id)
