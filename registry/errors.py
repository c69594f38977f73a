"""Registry errors: each names what was wrong so the API can answer with the right status."""


class RegistryError(Exception):
    """Base class; `field` names the offending input where there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(RegistryError):
    """The tenant, device or credential does not exist."""


class Conflict(RegistryError):
    """A unique id is taken, or a state change is not allowed from the current state."""


class Invalid(RegistryError):
    """A value breaks a registry rule (id pattern, limits)."""


class LimitReached(RegistryError):
    """A configured bound is reached (outstanding commands of a device): retry later."""
