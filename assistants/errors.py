"""Errors a user can cause. Each message is one clear sentence: what was wrong and what to do.

Frontends print `str(error)` (the CLI on one line, Discord as an ephemeral message); anything
else that escapes is a bug and keeps its traceback.
"""


class FewtuneError(Exception):
    """Base of every error a user can cause or fix."""


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
