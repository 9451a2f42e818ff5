"""One error hierarchy for nbops. Every error carries data and a hint for the user.

The magics turn an :class:`NbopsError` into one line (``str(err)``): what is wrong, then what to do.
The core never imports IPython.
"""

from __future__ import annotations

from typing import Any


class NbopsError(Exception):
    """Base of every error nbops raises on purpose.

    ``message`` says what is wrong, ``hint`` what to do about it; any keyword data (the engine
    address, the failing step, the build log...) is kept on ``.data`` and as attributes.
    """

    def __init__(self, message: str, *, hint: str | None = None, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.data = data
        for key, value in data.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message

    def one_line(self) -> str:
        """The message and hint on a single line (newlines folded)."""
        return " ".join(str(self).split())


class ConfigError(NbopsError):
    """A setting or an argument is wrong (unknown option, bad value)."""


class EngineError(NbopsError):
    """The Docker engine answered with an error."""


class EngineUnreachable(EngineError):
    """No engine answers at the address (socket missing, connection refused)."""


class EngineTimeout(EngineError):
    """The engine did not answer within the configured timeout (hung or overloaded)."""


class EngineHung(EngineTimeout):
    """The engine stopped answering in the middle of an operation (a build went silent and a ping timed out)."""


class NotFound(EngineError):
    """An image, container, service or node does not exist."""


class DockerfileError(NbopsError):
    """A Dockerfile cell cannot be parsed or fails a blocking lint rule."""


class BuildError(NbopsError):
    """A build failed; ``step``, ``exit_code`` and ``build_log`` say where and why."""


class RegistryError(NbopsError):
    """A registry is unreachable or refused a request."""


class AuthError(RegistryError):
    """A registry refused the credentials."""


class PushError(RegistryError):
    """A push failed inside its stream (docker-py does not raise there; nbops does)."""


class PolicyError(NbopsError):
    """A naming or push policy forbids the operation."""


class DeployError(NbopsError):
    """A deployment could not be applied."""


class RolloutFailed(DeployError):
    """A rollout did not become healthy in time (and may have been rolled back)."""


class LabError(NbopsError):
    """The local lab could not be started, inspected or stopped."""
