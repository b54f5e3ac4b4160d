"""What the fake Discord knows: users, guilds, channels, messages and interactions.

Everything the bot sends is recorded here so that tests can assert on it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DISCORD_EPOCH_MS = 1420070400000
_counter = itertools.count()

# Permission bits (https://discord.com/developers/docs/topics/permissions).
MANAGE_GUILD = 1 << 5
ADMINISTRATOR = 1 << 3
EVERYONE_PERMISSIONS = (
    (1 << 6)  # add reactions
    | (1 << 10)  # view channel
    | (1 << 11)  # send messages
    | (1 << 14)  # embed links
    | (1 << 15)  # attach files
    | (1 << 16)  # read message history
    | (1 << 31)  # use application commands
    | (1 << 35)  # create public threads
    | (1 << 38)  # send messages in threads
)
ALL_PERMISSIONS = (1 << 50) - 1


def snowflake() -> int:
    """A Discord-style id: milliseconds since the Discord epoch, then a counter."""
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (next(_counter) & 0x3FFFFF)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass
class User:
    id: int
    name: str
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "global_name": self.name,
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }


@dataclass
class Role:
    id: int
    name: str
    permissions: int
    position: int = 0

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }


@dataclass
class Member:
    user: User
    roles: list[Role] = field(default_factory=list)
    joined_at: float = field(default_factory=time.time)

    def payload(self, guild: Guild | None = None, with_user: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [str(r.id) for r in self.roles],
            "joined_at": iso(self.joined_at),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
        }
        if with_user:
            data["user"] = self.user.payload()
        if guild is not None:
            data["permissions"] = str(guild.permissions_of(self.user))
        return data


@dataclass
class Channel:
    id: int
    name: str
    type: int = 0  # 0 text, 1 DM, 11 public thread
    guild: Guild | None = None
    parent_id: int | None = None
    owner_id: int | None = None
    recipient: User | None = None
    messages: list[Message] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        if self.type == 1:
            assert self.recipient is not None
            return {
                "id": str(self.id),
                "type": 1,
                "last_message_id": None,
                "recipients": [self.recipient.payload()],
                "flags": 0,
            }
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "name": self.name,
            "guild_id": str(self.guild.id) if self.guild else None,
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": str(self.parent_id) if self.parent_id else None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        if self.type in (11, 12):
            data.update(
                owner_id=str(self.owner_id),
                message_count=len(self.messages),
                member_count=1,
                thread_metadata={
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": iso(time.time()),
                    "locked": False,
                },
                total_message_sent=len(self.messages),
            )
        return data


@dataclass
class Guild:
    id: int
    name: str
    owner: User
    everyone: Role
    roles: list[Role] = field(default_factory=list)
    members: dict[int, Member] = field(default_factory=dict)
    channels: list[Channel] = field(default_factory=list)

    def permissions_of(self, user: User) -> int:
        if user.id == self.owner.id:
            return ALL_PERMISSIONS
        member = self.members.get(user.id)
        perms = self.everyone.permissions
        for role in member.roles if member else []:
            perms |= role.permissions
        return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms

    def payload(self, bot: User) -> dict[str, Any]:
        """The GUILD_CREATE payload."""
        members = list(self.members.values())
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(self.owner.id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [r.payload() for r in [self.everyone, *self.roles]],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": iso(time.time()),
            "large": False,
            "unavailable": False,
            "member_count": len(members),
            "members": [m.payload() for m in members],
            "channels": [c.payload() for c in self.channels if c.type == 0],
            "threads": [c.payload() for c in self.channels if c.type in (11, 12)],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }


@dataclass
class Attachment:
    """A file: either uploaded by the bot or attached by a test user (served over HTTP)."""

    id: int
    filename: str
    data: bytes
    content_type: str | None = None
    url: str = ""

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": len(self.data),
            "url": self.url,
            "proxy_url": self.url,
        }
        if self.content_type:
            data["content_type"] = self.content_type
        return data


@dataclass
class Edit:
    at: float
    content: str


@dataclass
class Message:
    id: int
    channel: Channel
    author: User
    content: str = ""
    embeds: list[dict] = field(default_factory=list)
    components: list[dict] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    mentions: list[User] = field(default_factory=list)
    reference: Message | None = None
    interaction: Interaction | None = None  # set for interaction responses and follow-ups
    allowed_mentions: dict | None = None
    created_at: float = field(default_factory=time.time)
    edits: list[Edit] = field(default_factory=list)  # every content change after creation
    thread: Channel | None = None  # thread started from this message
    reactions: list[str] = field(default_factory=list)  # emojis the bot added
    deleted: bool = False

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 64)

    @property
    def from_bot(self) -> bool:
        return self.author.bot

    def buttons(self) -> list[dict]:
        """Every button of the message, from all action rows."""
        return [c for row in self.components for c in row.get("components", []) if c["type"] == 2]

    def button(self, label: str) -> dict:
        for b in self.buttons():
            if label in (b.get("label"), (b.get("emoji") or {}).get("name")):
                return b
        raise LookupError(f"no button {label!r} on message {self.id}: {self.buttons()}")

    def payload(self, bot_id: int, app_id: int) -> dict[str, Any]:
        guild = self.channel.guild
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel.id),
            "author": self.author.payload(),
            "content": self.content,
            "timestamp": iso(self.created_at),
            "edited_timestamp": iso(self.edits[-1].at) if self.edits else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [u.payload() for u in self.mentions],
            "mention_roles": [],
            "attachments": [a.payload() for a in self.attachments],
            "embeds": self.embeds,
            "pinned": False,
            "type": 19 if self.reference else 0,
            "flags": self.flags,
            "components": self.components,
        }
        if guild is not None:
            data["guild_id"] = str(guild.id)
            member = guild.members.get(self.author.id)
            if member is not None:
                data["member"] = member.payload(with_user=False)
        if self.reference is not None:
            data["message_reference"] = {
                "type": 0,
                "message_id": str(self.reference.id),
                "channel_id": str(self.reference.channel.id),
                "guild_id": str(guild.id) if guild else None,
            }
            data["referenced_message"] = self.reference.payload(bot_id, app_id)
        if self.interaction is not None:
            data["webhook_id"] = str(app_id)
            data["application_id"] = str(app_id)
            data["interaction_metadata"] = {
                "id": str(self.interaction.id),
                "type": self.interaction.type,
                "user": self.interaction.user.payload(),
                "authorizing_integration_owners": {},
            }
        if self.thread is not None:
            data["thread"] = self.thread.payload()
        return data


@dataclass
class Interaction:
    """One interaction sent to the bot and everything the bot answered to it."""

    id: int
    token: str
    type: int  # 2 command, 3 component, 4 autocomplete, 5 modal submit
    user: User
    channel: Channel
    data: dict
    message: Message | None = None  # for components: the message clicked
    created_at: float = field(default_factory=time.time)
    callbacks: list[tuple[float, int, dict]] = field(default_factory=list)  # (at, type, data)
    original: Message | None = None
    followups: list[Message] = field(default_factory=list)
    modal: dict | None = None  # the modal the bot opened (callback type 9)
    choices: list[dict] | None = None  # autocomplete result (callback type 8)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def acknowledged_after(self) -> float | None:
        """Seconds from the interaction to the bot's first callback."""
        return self.callbacks[0][0] - self.created_at if self.callbacks else None

    @property
    def ephemeral(self) -> bool:
        """Whether everything the user can see of the answer is for them alone."""
        shown = self.messages()
        return bool(shown) and all(m.ephemeral for m in shown)

    def messages(self) -> list[Message]:
        """The answer's messages still shown (a deleted one is gone, as in Discord)."""
        return [m for m in [self.original, *self.followups] if m is not None and not m.deleted]

    def texts(self) -> list[str]:
        """Contents and embed texts of the original response and follow-ups, in order."""
        out = []
        for m in self.messages():
            parts = [m.content]
            for e in m.embeds:
                parts += [e.get("title", ""), e.get("description", "")]
                parts += [f"{f.get('name', '')}: {f.get('value', '')}" for f in e.get("fields", [])]
            out.append("\n".join(p for p in parts if p))
        return out

    def text(self) -> str:
        return "\n".join(self.texts())
