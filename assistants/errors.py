"""Errors a user can cause. Each message is one clear sentence: what was wrong and what to do.

They build on `storage.errors.FewtuneError`, the family that storage's outages (the index, the
embedder, the settings file) belong to as well. Frontends catch FewtuneError alone and print
`str(error)` (the CLI on one line, Discord as an ephemeral message); anything else that escapes
is a bug and keeps its traceback.
"""

from storage.errors import FewtuneError

__all__ = [
    "AlreadyExists",
    "FewtuneError",
    "ImportRejected",
    "InvalidInput",
    "LimitExceeded",
    "NotFound",
    "PermissionDenied",
    "ProviderError",
]


class NotFound(FewtuneError):
    """An assistant, example, message or conversation that does not exist (or is not visible)."""


class AlreadyExists(FewtuneError):
    """A name already taken in its scope."""


class InvalidInput(FewtuneError):
    """A value out of range or of the wrong form."""


class PermissionDenied(FewtuneError):
    """The actor may not do this to this assistant."""


class LimitExceeded(FewtuneError):
    """A size or count limit, or a rate limit."""


class ImportRejected(FewtuneError):
    """An import file refused whole; the message names the line and the reason."""


class ProviderError(FewtuneError):
    """The model provider is down, slow or refusing, after bounded retries."""
