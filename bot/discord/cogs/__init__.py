"""Slash command groups, one cog per area: assistant, example, knowledge, chat, privacy."""

from bot.discord.cogs.assistant import AssistantCog
from bot.discord.cogs.chat import ChatCog
from bot.discord.cogs.example import ExampleCog
from bot.discord.cogs.knowledge import KnowledgeCog
from bot.discord.cogs.privacy import PrivacyCog

COGS = (AssistantCog, ExampleCog, KnowledgeCog, ChatCog, PrivacyCog)

__all__ = ["COGS", "AssistantCog", "ChatCog", "ExampleCog", "KnowledgeCog", "PrivacyCog"]
