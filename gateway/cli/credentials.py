"""Device credentials (tokens, passwords, certificates) and a tenant's service accounts."""

import json
import sys
from typing import Annotated

import typer

from .client import api_path, fail, run
from .options import DataDirOption, Device, JsonOption, Tenant
from .output import show
from .typer_group import subgroup

token = subgroup("token", "Endpoint tokens: issue, list, change state, delete.")
password = subgroup("password", "Username/password credentials of devices.")
certificate = subgroup("certificate", "X.509 credentials, made by auto-provisioning.")
service_account = subgroup("service-account", "A tenant's event consumers (role service).")


TOKEN_COLUMNS = ["token", "device", "state", "certificateBound", "createdAt", "lastUsedAt"]
PASSWORD_COLUMNS = ["authId", "username", "state", "createdAt", "lastUsedAt"]
CERTIFICATE_COLUMNS = ["fingerprint", "device", "caId", "authId", "state", "lastUsedAt"]
TokenArg = Annotated[str, typer.Argument(metavar="TOKEN", help="the endpoint token")]
AuthId = Annotated[str, typer.Argument(metavar="AUTH_ID", help="the password's auth-id (username AUTH_ID@TENANT)")]
Fingerprint = Annotated[str, typer.Argument(metavar="FINGERPRINT", help="the certificate's SHA-256 fingerprint")]
State = Annotated[str, typer.Argument(metavar="STATE", help="inactive, active, suspended or revoked")]
Account = Annotated[str, typer.Argument(metavar="ID", help="the service account's id")]


@token.command("issue")
def token_issue(
    tenant_id: Tenant,
    device_id: Device,
    value: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            help="this device token instead of a generated one (the admin token goes before the command:"
            " `mqtt-gateway --token ADMIN token issue ...`)",
        ),
    ] = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue an endpoint token; prints the token alone (or the JSON record with --json)."""
    body = {"token": value} if value else None
    result = run(data_dir, "POST", api_path("/v1/tenants/{}/devices/{}/tokens", tenant_id, device_id), body)
    typer.echo(json.dumps(result, indent=2) if as_json else result["token"])


@token.command("list")
def token_list(
    tenant_id: Tenant, device_id: Device, data_dir: DataDirOption = None, as_json: JsonOption = False
) -> None:
    """The device's tokens and their states."""
    result = run(data_dir, "GET", api_path("/v1/tenants/{}/devices/{}/tokens", tenant_id, device_id))
    show(result, as_json, TOKEN_COLUMNS)


@token.command("get")
def token_get(tenant_id: Tenant, value: TokenArg, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """One token: its device and state."""
    show(run(data_dir, "GET", api_path("/v1/tenants/{}/tokens/{}", tenant_id, value)), as_json, TOKEN_COLUMNS)


@token.command("set-state")
def token_set_state(
    tenant_id: Tenant, value: TokenArg, state: State, data_dir: DataDirOption = None, as_json: JsonOption = False
) -> None:
    """Activate, suspend or revoke a token.

    Suspending or revoking closes its sessions."""
    result = run(data_dir, "PATCH", api_path("/v1/tenants/{}/tokens/{}", tenant_id, value), {"state": state})
    show(result, as_json, TOKEN_COLUMNS)


@token.command("delete")
def token_delete(tenant_id: Tenant, value: TokenArg, data_dir: DataDirOption = None) -> None:
    """Delete a token and close its sessions."""
    found = run(data_dir, "GET", api_path("/v1/tenants/{}/tokens/{}", tenant_id, value))
    run(data_dir, "DELETE", api_path("/v1/tenants/{}/devices/{}/tokens/{}", tenant_id, found["device"], value))


@password.command("set")
def password_set(
    tenant_id: Tenant, device_id: Device, auth_id: AuthId, data_dir: DataDirOption = None, as_json: JsonOption = False
) -> None:
    """Set AUTH_ID's password, read from stdin.

    The first line of stdin. MQTT username: AUTH_ID@TENANT. A new password closes the sessions of the old."""
    path = api_path("/v1/tenants/{}/devices/{}/passwords/{}", tenant_id, device_id, auth_id)
    secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        raise fail("no password on stdin", 2)
    show(run(data_dir, "PUT", path, {"password": secret}), as_json, PASSWORD_COLUMNS)


@password.command("list")
def password_list(
    tenant_id: Tenant, device_id: Device, data_dir: DataDirOption = None, as_json: JsonOption = False
) -> None:
    """The device's passwords (their auth-ids and states; never the secrets)."""
    result = run(data_dir, "GET", api_path("/v1/tenants/{}/devices/{}/passwords", tenant_id, device_id))
    show(result, as_json, PASSWORD_COLUMNS)


@password.command("set-state")
def password_set_state(
    tenant_id: Tenant,
    device_id: Device,
    auth_id: AuthId,
    state: State,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Activate, suspend or revoke a password.

    Suspending or revoking closes its sessions."""
    path = api_path("/v1/tenants/{}/devices/{}/passwords/{}", tenant_id, device_id, auth_id)
    show(run(data_dir, "PATCH", path, {"state": state}), as_json, PASSWORD_COLUMNS)


@password.command("delete")
def password_delete(tenant_id: Tenant, device_id: Device, auth_id: AuthId, data_dir: DataDirOption = None) -> None:
    """Delete a password and close its sessions."""
    run(data_dir, "DELETE", api_path("/v1/tenants/{}/devices/{}/passwords/{}", tenant_id, device_id, auth_id))


@certificate.command("list")
def certificate_list(
    tenant_id: Tenant, device_id: Device, data_dir: DataDirOption = None, as_json: JsonOption = False
) -> None:
    """The device's certificates: fingerprint, the CA it came through, state."""
    result = run(data_dir, "GET", api_path("/v1/tenants/{}/devices/{}/certificates", tenant_id, device_id))
    show(result, as_json, CERTIFICATE_COLUMNS)


@certificate.command("get")
def certificate_get(
    tenant_id: Tenant,
    device_id: Device,
    fingerprint: Fingerprint,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """One certificate credential."""
    path = api_path("/v1/tenants/{}/devices/{}/certificates/{}", tenant_id, device_id, fingerprint)
    show(run(data_dir, "GET", path), as_json, CERTIFICATE_COLUMNS)


@certificate.command("set-state")
def certificate_set_state(
    tenant_id: Tenant,
    device_id: Device,
    fingerprint: Fingerprint,
    state: State,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Re-activate, suspend or revoke a certificate.

    Suspending or revoking closes its sessions."""
    path = api_path("/v1/tenants/{}/devices/{}/certificates/{}", tenant_id, device_id, fingerprint)
    show(run(data_dir, "PATCH", path, {"state": state}), as_json, CERTIFICATE_COLUMNS)


@service_account.command("create")
def service_account_create(
    tenant_id: Tenant,
    account_id: Account,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="accepted for scripts: the answer is JSON anyway")] = False,
) -> None:
    """Prints {"id", "username", "password"}; the password is shown this once."""
    path = api_path("/v1/tenants/{}/service-accounts", tenant_id)
    typer.echo(json.dumps(run(data_dir, "POST", path, {"id": account_id})))


@service_account.command("list")
def service_account_list(tenant_id: Tenant, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """The tenant's service accounts and their MQTT usernames."""
    result = run(data_dir, "GET", api_path("/v1/tenants/{}/service-accounts", tenant_id))
    show(result, as_json, ["id", "username"])


@service_account.command("delete")
def service_account_delete(tenant_id: Tenant, account_id: Account, data_dir: DataDirOption = None) -> None:
    """Delete the account and close its sessions."""
    run(data_dir, "DELETE", api_path("/v1/tenants/{}/service-accounts/{}", tenant_id, account_id))
