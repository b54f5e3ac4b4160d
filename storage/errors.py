"""The one error family frontends catch: anything a user can cause, and any outage they can be
told about (the index, the embedder, the settings file, the model provider).

It lives here, below the core, so that storage's own errors belong to it without storage
importing the core; `assistants.errors` builds its errors on it. Each message is one sentence:
what was wrong and what to do.
"""


class FewtuneError(Exception):
    """Base of every error a user can cause or fix: frontends show `str(error)` and nothing else."""
