"""Wrong admin tokens at the login forms (/ui/login, /docs/login): what guessing costs, and who pays.

A stranger's attempt (a browser that has not logged in here) draws on its source address's budget and
on the budget of all addresses together: checked before the form is read (a throttled guess costs
no body), taken right before the comparison, so a parallel flood is counted in full; a wrong token
keeps the tokens, a right one gives them back (throttle.py's `Attempt`).
A browser that logged in before carries a random cookie naming it (it authorizes nothing) and draws
on a budget of its own instead: an attacker, from the admin's own NAT address or from a thousand
addresses, can empty every shared budget and still never lock the admin's browser out, because the
only way to such a budget is the token itself. The address's budget is smaller than the shared one
(settings.py checks it), so one address alone never empties it either.
"""

from __future__ import annotations

import hashlib
import secrets

from ..node.settings import GatewaySettings
from .recent import RecentLogins
from .throttle import Attempt, BucketMap, address_key, take_all

MAX_BROWSERS = 1_000
"""Browsers remembered, least recently used forgotten first. Only a login with the token adds one."""


def _digest(browser: str) -> str:
    """A bucket's key: the cookie's value is not kept."""
    return hashlib.sha256(browser.encode("utf-8", "replace")).hexdigest()


class LoginThrottle:
    def __init__(
        self,
        *,
        per_address: int,
        per_browser: int,
        overall: int,
        refill_per_minute: float,
        overall_refill_per_minute: float,
        max_browsers: int = MAX_BROWSERS,
    ) -> None:
        self.addresses = BucketMap("login_failures_per_address", per_address, refill_per_minute)
        self.browsers = BucketMap("login_failures_per_browser", per_browser, refill_per_minute, max_browsers)
        self.overall = BucketMap("login_failures_overall", overall, overall_refill_per_minute, 1)
        self._known = RecentLogins(max_browsers)

    @classmethod
    def of(cls, settings: GatewaySettings) -> LoginThrottle:
        return cls(
            per_address=settings.login_failures_per_address,
            per_browser=settings.login_failures_per_browser,
            overall=settings.login_failures_overall,
            refill_per_minute=settings.login_failure_refill_per_minute,
            overall_refill_per_minute=settings.login_failure_overall_refill_per_minute,
        )

    def knows(self, browser: str | None) -> bool:
        return browser is not None and self._known.knows(browser, None)

    def _budgets(self, address: str | None, browser: str | None) -> list[tuple[BucketMap, str]]:
        if browser is not None and self.knows(browser):
            return [(self.browsers, _digest(browser))]
        return [*([(self.addresses, address_key(address))] if address else []), (self.overall, "")]

    def check(self, address: str | None, browser: str | None) -> Attempt | None:
        """Before the form is read: a refusal (`throttled_by`, `retry_after`) if a budget is empty, else
        None. It takes nothing: a token held while a client dawdles over its body would let idle
        connections empty the shared budget without a single guess."""
        for buckets, key in self._budgets(address, browser):
            if not buckets.available(key):
                return Attempt([], throttled_by=buckets.name, retry_after=buckets.seconds_until_available(key))
        return None

    def reserve(self, address: str | None, browser: str | None) -> Attempt:
        """The tokens one comparison holds, taken right before it, with no await between, so parallel
        guesses count in full; refused (`throttled_by`, `retry_after`) if a budget is empty."""
        return take_all(self._budgets(address, browser))

    def remember(self, browser: str | None) -> str | None:
        """After a login with the token: a new browser cookie value to set, or None if it has one."""
        if browser is not None and self.knows(browser):
            self._known.succeeded(browser, None)  # the most recently used now
            return None
        issued = secrets.token_urlsafe(32)
        self._known.succeeded(issued, None)
        return issued
