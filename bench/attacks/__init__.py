"""Attacks on the gateway, one module each, for `python -m bench.abuse`.

Each module names one attack and measures what it achieves and what a bystander sees meanwhile: a
device of another tenant doing 10/EPMP `get` round trips from its own process (bystander.py), so the
attacker's load generator cannot slow the bystander's client. A module defines

    NAME: str                                       # the table's row label
    WHAT: str                                       # one line: what the attacker does
    async def run(server: Server, quick: bool) -> Outcome
    SETTINGS: dict[str, object]                     # optional: gateway settings for its server

and bench/abuse.py lists it in ATTACKS. `server` is a gateway (bench/servers.py) whose `info` holds the
`bench` tenant's credentials and the bystander's (`bystander_token`, tenant `bystander`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at run time: `python -m bench.attacks.bystander` would find itself imported
    from .bystander import RoundTrips


@dataclass(frozen=True)
class Outcome:
    effect: str
    """What the attack got, in the units that matter to it (e.g. "+0.3 MB registry", "refused at 20/s (429)")."""
    bystander: RoundTrips | None
    """The bystander's round trips while the attack ran."""
