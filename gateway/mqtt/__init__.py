"""The MQTT 3.1.1 broker the gateway runs: our session layer on amqtt's plugin API.

Start at broker.py: it names every room of this package.
"""
