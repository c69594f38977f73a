"""The gateway's services behind MQTT and the API: commands, policies, data, events, imports, filters."""
