"""11/CEP commands between a tenant's applications and its devices.

Applications invoke over REST (`POST /v1/tenants/{t}/devices/{d}/commands/{type}`) or MQTT
(`$gateway/commands/<tenant>/<device id>/<type>`); results go back to the waiting REST call and out on
`$gateway/commands/<tenant>/<device id>/<type>/result`. Devices fetch and observe commands on
`kp1/<app version>/cex/<token>/command/<type>` and report on `.../result/<type>`.

The rooms: service.py (invoking, waiting for a result, finishing, the expiry timer), devices.py (the
device side: fetch, observe, results, pushes to its sessions), applications.py (invocations published
by service accounts over MQTT), invocation_audit.py (what those may cost: rate, audit rows),
messages.py (what callers, devices and applications are told). The registry holds every command
(registry/commands.py), so outstanding ones survive a restart; the wire format is kp1/cep.py.
"""
