"""The core of fewtune: assistants, their examples, example selection, prompts, chat through one
OpenAI-compatible door, feedback and privacy. Never imports torch or transformers."""

from assistants.actor import TERMINAL, Actor
from assistants.assistant import Assistant
from assistants.chat import Conversation, Reply
from assistants.core import Core
from assistants.errors import (
    AlreadyExists,
    FewtuneError,
    ImportRejected,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    ProviderError,
)
from assistants.examples import Example, ImportResult
from assistants.knowledge.context import Source, sources_line
from assistants.origin import NoAssistant, Origin

__all__ = [
    "TERMINAL",
    "Actor",
    "AlreadyExists",
    "Assistant",
    "Conversation",
    "Core",
    "Example",
    "FewtuneError",
    "ImportRejected",
    "ImportResult",
    "InvalidInput",
    "LimitExceeded",
    "NoAssistant",
    "NotFound",
    "Origin",
    "PermissionDenied",
    "ProviderError",
    "Reply",
    "Source",
    "sources_line",
]
