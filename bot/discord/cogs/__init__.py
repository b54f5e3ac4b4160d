"""Slash command groups, one cog per area: assistant, example, chat, privacy."""

from bot.discord.cogs.assistant import AssistantCog
from bot.discord.cogs.chat import ChatCog
from bot.discord.cogs.example import ExampleCog
from bot.discord.cogs.privacy import PrivacyCog

COGS = (AssistantCog, ExampleCog, ChatCog, PrivacyCog)

__all__ = ["COGS", "AssistantCog", "ChatCog", "ExampleCog", "PrivacyCog"]
