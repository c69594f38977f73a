"""A minimal auth plugin for the stock amqtt Broker in the defect tests: usernames starting 'good' pass."""

from __future__ import annotations

from dataclasses import dataclass

from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session


class AllowGoodUsernames(BaseAuthPlugin):
    @dataclass
    class Config:
        pass

    async def authenticate(self, *, session: Session) -> bool:
        return bool(session.username and session.username.startswith("good"))
