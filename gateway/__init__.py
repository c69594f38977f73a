"""The MQTT device gateway: hardened amqtt broker, device auth, topic ACL, presence, management API."""
