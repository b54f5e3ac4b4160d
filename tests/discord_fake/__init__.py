"""A loopback Discord-compatible server for end-to-end tests with the real discord.py client."""

from .records import Attachment, Channel, Guild, Interaction, Member, Message, User
from .server import FakeDiscord

__all__ = [
    "Attachment",
    "Channel",
    "FakeDiscord",
    "Guild",
    "Interaction",
    "Member",
    "Message",
    "User",
]
