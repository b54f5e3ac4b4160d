"""FakeDiscord: a loopback Discord-compatible server and the API tests drive it with.

The real discord.py client connects to it (REST v10 under /api/v10, the gateway at /gateway).
Tests create users, guilds and channels, then act as Discord users: slash commands, autocomplete,
modal submits, button clicks, channel messages. Everything the bot sends is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .gateway import Session, handle_gateway, wants
from .records import (
    EVERYONE_PERMISSIONS,
    MANAGE_GUILD,
    Attachment,
    Channel,
    Edit,
    Guild,
    Interaction,
    Member,
    Message,
    Role,
    User,
    snowflake,
)
from .rest import Rest, json_response

ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
_MENTION = re.compile(r"<@!?(\d+)>|<@&(\d+)>|@(everyone|here)")


@dataclass
class RateRule:
    method: str
    pattern: re.Pattern[str]
    times: int
    retry_after: float
    is_global: bool


@dataclass
class Request:
    at: float
    method: str
    path: str
    status: int


FileArg = tuple[str, bytes] | tuple[str, bytes, str | None]


class FakeDiscord:
    """A Discord-compatible server on 127.0.0.1. Use `async with FakeDiscord() as fake:`."""

    def __init__(self, token: str = "fake-bot-token", bot_name: str = "fewtune") -> None:
        self.token = token
        self.bot = User(snowflake(), bot_name, bot=True)
        self.app_id = self.bot.id
        self.app_owner = User(snowflake(), "app-owner")
        self.users: dict[int, User] = {self.bot.id: self.bot}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self.attachments: dict[int, Attachment] = {}
        self.interactions: dict[int, Interaction] = {}
        self.commands: dict[int | None, list[dict]] = {}  # guild id (None: global) -> commands
        self.command_syncs: list[tuple[float, int | None]] = []
        self.identify_payloads: list[dict] = []
        self.sessions: list[Session] = []
        self.gateway_connections = 0
        self.requests: list[Request] = []
        self.rate_limited: list[Request] = []
        self.typing: list[int] = []
        self._rules: list[RateRule] = []
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.add_routes(Rest(self).routes())
        app.add_routes([web.get("/gateway", lambda r: handle_gateway(self, r))])
        app.add_routes([web.get("/", lambda r: handle_gateway(self, r))])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        for session in list(self.sessions):
            await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def env(self) -> dict[str, str]:
        """The environment variables that point a bot at this server."""
        return {
            "DISCORD_TOKEN": self.token,
            "FEWTUNE_DISCORD_API_BASE": self.api_base,
            "FEWTUNE_DISCORD_GATEWAY": self.gateway_url,
        }

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        path = request.path
        for rule in self._rules:
            if rule.times > 0 and rule.method == request.method and rule.pattern.search(path):
                rule.times -= 1
                entry = Request(time.time(), request.method, path, 429)
                self.requests.append(entry)
                self.rate_limited.append(entry)
                self.notify()
                return self._too_many(rule)
        public = path.startswith(("/api/v10/webhooks/", "/api/v10/interactions/", "/attachments/"))
        authorized = request.headers.get("Authorization") == f"Bot {self.token}"
        if path.startswith("/api/v10/") and not public and not authorized:
            return json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        response = await handler(request)
        self.requests.append(Request(time.time(), request.method, path, response.status))
        return response

    @staticmethod
    def _too_many(rule: RateRule) -> web.Response:
        body = {
            "message": "You are being rate limited.",
            "retry_after": rule.retry_after,
            "global": rule.is_global,
            "code": 0,
        }
        headers = {
            "Via": "1.1 google",  # discord.py treats a 429 without it as a Cloudflare ban
            "Retry-After": str(max(1, round(rule.retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": str(rule.retry_after),
            "X-RateLimit-Scope": "shared" if not rule.is_global else "global",
        }
        if rule.is_global:
            headers["X-RateLimit-Global"] = "true"
        return json_response(body, status=429, headers=headers)

    def rate_limit(
        self,
        method: str,
        path_regex: str,
        *,
        times: int = 1,
        retry_after: float = 0.5,
        is_global: bool = False,
    ) -> None:
        """Answer the next `times` matching requests with 429 and this retry_after."""
        self._rules.append(
            RateRule(method.upper(), re.compile(path_regex), times, retry_after, is_global)
        )

    # --- world building ------------------------------------------------------------------

    def add_user(self, name: str) -> User:
        user = User(snowflake(), name)
        self.users[user.id] = user
        return user

    def add_guild(self, name: str, owner: User, channels: Iterable[str] = ("general",)) -> Guild:
        everyone_id = snowflake()
        guild_id = everyone_id  # the @everyone role has the guild's id
        guild = Guild(guild_id, name, owner, Role(everyone_id, "@everyone", EVERYONE_PERMISSIONS))
        guild.roles.append(Role(snowflake(), "Managers", MANAGE_GUILD, position=1))
        self.guilds[guild.id] = guild
        guild.members[owner.id] = Member(owner)
        guild.members[self.bot.id] = Member(self.bot)
        for channel_name in channels:
            self.add_channel(guild, channel_name)
        return guild

    def add_channel(self, guild: Guild, name: str) -> Channel:
        channel = Channel(snowflake(), name, 0, guild=guild)
        guild.channels.append(channel)
        self.channels[channel.id] = channel
        return channel

    def add_member(self, guild: Guild, user: User, *, manage_guild: bool = False) -> Member:
        roles = [r for r in guild.roles if r.permissions & MANAGE_GUILD] if manage_guild else []
        member = Member(user, roles)
        guild.members[user.id] = member
        return member

    def channel(self, guild: Guild, name: str = "general") -> Channel:
        return next(c for c in guild.channels if c.name == name)

    def dm_channel(self, user: User) -> Channel:
        for channel in self.channels.values():
            if channel.type == 1 and channel.recipient is user:
                return channel
        channel = Channel(snowflake(), "", 1, recipient=user)
        self.channels[channel.id] = channel
        return channel

    def new_thread(self, parent: Channel, name: str, thread_id: int) -> Channel:
        thread = Channel(thread_id, name, 11, guild=parent.guild, parent_id=parent.id)
        thread.owner_id = self.bot.id
        assert parent.guild is not None
        parent.guild.channels.append(thread)
        self.channels[thread.id] = thread
        return thread

    def new_attachment(
        self, filename: str, data: bytes, content_type: str | None = None
    ) -> Attachment:
        attachment = Attachment(snowflake(), filename, data, content_type)
        attachment.url = f"{self.base_url}/attachments/{attachment.id}/{filename}"
        self.attachments[attachment.id] = attachment
        return attachment

    # --- messages ------------------------------------------------------------------------

    def new_message(
        self, channel: Channel, author: User, body: dict, files: list[Attachment], flags: int = 0
    ) -> Message:
        message = Message(snowflake(), channel, author, flags=flags)
        message.allowed_mentions = body.get("allowed_mentions")
        self._fill(message, body, files)
        self.messages[message.id] = message
        channel.messages.append(message)
        return message

    def apply_edit(self, message: Message, body: dict, files: list[Attachment]) -> None:
        self._fill(message, body, files)
        message.edits.append(Edit(time.time(), message.content))

    def _fill(self, message: Message, body: dict, files: list[Attachment]) -> None:
        if "content" in body:
            message.content = body["content"] or ""
        if "embeds" in body:
            message.embeds = body["embeds"] or []
        if "components" in body:
            message.components = body["components"] or []
        if "flags" in body and body["flags"] is not None:
            message.flags = (
                (message.flags & ~64) | (int(body["flags"]) & ~128) | (message.flags & 64)
            )
        if "allowed_mentions" in body:
            message.allowed_mentions = body["allowed_mentions"]
        if "attachments" in body:
            keep = {int(a["id"]) for a in body["attachments"] or [] if "filename" not in a}
            message.attachments = [a for a in message.attachments if a.id in keep]
        message.attachments += files

    def payload(self, message: Message) -> dict[str, Any]:
        return message.payload(self.bot.id, self.app_id)

    async def dispatch(self, event: str, data: dict) -> None:
        for session in list(self.sessions):
            send, seen = wants(session, event, data, self.bot.id)
            if send:
                await session.send(event, seen)

    async def publish(self, message: Message) -> None:
        if not message.ephemeral:
            await self.dispatch("MESSAGE_CREATE", self.payload(message))

    async def publish_update(self, message: Message) -> None:
        if not message.ephemeral:
            await self.dispatch("MESSAGE_UPDATE", self.payload(message))

    def bot_messages(self, channel: Channel | None = None) -> list[Message]:
        """Messages the bot created (channel messages and interaction responses), oldest first."""
        return [
            m
            for m in self.messages.values()
            if m.author.id == self.bot.id and (channel is None or m.channel is channel)
        ]

    @staticmethod
    def pings(message: Message) -> list[str]:
        """Who a message would notify, under its allowed_mentions (Discord's rules)."""
        allowed = message.allowed_mentions
        parse = (
            set(allowed.get("parse", [])) if allowed is not None else {"users", "roles", "everyone"}
        )
        users = set((allowed or {}).get("users", []))
        roles = set((allowed or {}).get("roles", []))
        out = []
        for user_id, role_id, everyone in _MENTION.findall(message.content):
            if everyone and "everyone" in parse:
                out.append(f"@{everyone}")
            elif user_id and ("users" in parse or user_id in users):
                out.append(f"user:{user_id}")
            elif role_id and ("roles" in parse or role_id in roles):
                out.append(f"role:{role_id}")
        return out

    # --- waiting -------------------------------------------------------------------------

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self, predicate: Callable[[], Any], timeout: float = 15.0, what: str = ""
    ) -> Any:
        """Wait until predicate() is truthy; returns its value; fails the test on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                recent = [f"{r.method} {r.path} {r.status}" for r in self.requests[-8:]]
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what or predicate}; "
                    f"the bot's last requests: {recent}"
                )
            with contextlib.suppress(TimeoutError):  # re-check now and then all the same
                await asyncio.wait_for(self._changed.wait(), min(left, 0.25))

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until a bot has identified on the gateway and received its guilds."""
        await self.wait_until(lambda: self.sessions, timeout, "the bot to connect to the gateway")

    # --- acting as users -----------------------------------------------------------------

    async def user_message(
        self,
        channel: Channel,
        author: User,
        content: str,
        *,
        mention_bot: bool = False,
        reply_to: Message | None = None,
        attachments: Iterable[FileArg] = (),
    ) -> Message:
        """A user posts a message (MESSAGE_CREATE). A reply pings the replied-to author."""
        if mention_bot and f"<@{self.bot.id}>" not in content:
            content = f"<@{self.bot.id}> {content}"
        files = [self.new_attachment(*a) for a in attachments]
        message = self.new_message(channel, author, {"content": content}, files)
        mentioned = {int(m) for m, _, _ in _MENTION.findall(content) if m}
        message.mentions = [self.users[i] for i in mentioned if i in self.users]
        if reply_to is not None:
            message.reference = reply_to
            if reply_to.author not in message.mentions:
                message.mentions.append(reply_to.author)
        await self.publish(message)
        self.notify()
        return message

    def _command(self, name: str, channel: Channel) -> dict:
        guild_id = channel.guild.id if channel.guild else None
        for scope in (guild_id, None):
            for cmd in self.commands.get(scope, []):
                if cmd["name"] == name and cmd.get("type", 1) == 1:
                    return cmd
        raise LookupError(f"/{name} is not registered (synced: {list(self.commands)})")

    def _options(
        self, schema: list[dict], values: dict[str, Any], resolved: dict, partial: bool = False
    ) -> list[dict]:
        known = {o["name"]: o for o in schema}
        out = []
        for name, value in values.items():
            if name not in known:
                raise LookupError(f"option {name!r} is not one of {sorted(known)}")
            kind = known[name]["type"]
            if kind == 11:
                attachment = self.new_attachment(*value)
                resolved.setdefault("attachments", {})[str(attachment.id)] = attachment.payload()
                value = str(attachment.id)
            elif kind == 6:
                resolved.setdefault("users", {})[str(value.id)] = value.payload()
                value = str(value.id)
            out.append({"name": name, "type": kind, "value": value})
        missing = [o["name"] for o in schema if o.get("required") and o["name"] not in values]
        if missing and not partial:  # autocomplete sends what has been typed so far
            raise LookupError(f"required options missing: {missing}")
        return out

    def _command_data(
        self,
        command: str,
        sub: str | None,
        channel: Channel,
        options: dict[str, Any],
        focused: str | None = None,
    ) -> dict:
        cmd = self._command(command, channel)
        resolved: dict = {}
        schema = cmd.get("options", [])
        if sub is not None:
            group = next((o for o in schema if o["name"] == sub and o["type"] == 1), None)
            if group is None:
                raise LookupError(f"/{command} has no subcommand {sub!r}")
            inner = self._options(group.get("options", []), options, resolved, bool(focused))
            opts = [{"name": sub, "type": 1, "options": inner}]
            leaf = inner
        else:
            opts = leaf = self._options(schema, options, resolved, bool(focused))
        for option in leaf:
            if option["name"] == focused:
                option["focused"] = True
        data: dict[str, Any] = {"id": cmd["id"], "name": command, "type": 1, "options": opts}
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        if resolved:
            data["resolved"] = resolved
        return data

    async def _send_interaction(
        self, kind: int, user: User, channel: Channel, data: dict, message: Message | None = None
    ) -> Interaction:
        if channel.guild is not None and user.id not in channel.guild.members:
            raise LookupError(f"{user.name} is not a member of {channel.guild.name}")
        ix = Interaction(snowflake(), secrets.token_urlsafe(32), kind, user, channel, data, message)
        self.interactions[ix.id] = ix
        guild = channel.guild
        payload: dict[str, Any] = {
            "id": str(ix.id),
            "application_id": str(self.app_id),
            "type": kind,
            "data": data,
            "token": ix.token,
            "version": 1,
            "channel_id": str(channel.id),
            "channel": channel.payload(),
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
            "context": 0 if guild else 1,
        }
        if guild is not None:
            payload["guild_id"] = str(guild.id)
            payload["guild"] = {"id": str(guild.id), "locale": "en-US", "features": []}
            payload["guild_locale"] = "en-US"
            payload["member"] = guild.members[user.id].payload(guild)
            payload["app_permissions"] = str(guild.permissions_of(self.bot))
            payload["authorizing_integration_owners"] = {"0": str(guild.id)}
        else:
            payload["user"] = user.payload()
            payload["authorizing_integration_owners"] = {"1": str(user.id)}
        if message is not None:
            payload["message"] = self.payload(message)
        await self.dispatch("INTERACTION_CREATE", payload)
        return ix

    async def slash(
        self,
        command: str,
        sub: str | None = None,
        *,
        user: User,
        channel: Channel,
        options: dict[str, Any] | None = None,
    ) -> Interaction:
        """A user runs /command [sub] with options; attachments are (filename, bytes[, type])."""
        data = self._command_data(command, sub, channel, options or {})
        return await self._send_interaction(2, user, channel, data)

    async def autocomplete(
        self,
        command: str,
        sub: str | None = None,
        *,
        user: User,
        channel: Channel,
        options: dict[str, Any],
        focused: str,
        timeout: float = 10.0,
    ) -> list[dict]:
        """The choices the bot offers while `focused` is being typed."""
        data = self._command_data(command, sub, channel, options, focused)
        ix = await self._send_interaction(4, user, channel, data)
        await self.wait_until(lambda: ix.choices is not None, timeout, "autocomplete choices")
        assert ix.choices is not None
        return ix.choices

    async def submit_modal(
        self,
        opened: Interaction,
        values: dict[str, str],
        *,
        enforce_limits: bool = True,
    ) -> Interaction:
        """Fill the modal `opened` showed (fields by label or custom_id) and submit it."""
        modal = opened.modal
        if modal is None:
            raise LookupError("the bot did not open a modal for this interaction")
        rows = []
        used = set()
        for row in modal.get("components", []):
            if row["type"] == 18:  # label wrapping one component
                inner, label = row["component"], row.get("label")
            else:
                inner, label = row["components"][0], row["components"][0].get("label")
            key = label if label in values else inner["custom_id"]
            value = values.get(key, inner.get("value") or "")
            used.add(key)
            if enforce_limits:  # the Discord client enforces these before sending
                if inner.get("required", True) and not value:
                    raise ValueError(f"field {label!r} is required")
                if len(value) > inner.get("max_length", 4000):
                    raise ValueError(f"field {label!r} is longer than {inner.get('max_length')}")
            text = {"type": 4, "custom_id": inner["custom_id"], "value": value}
            rows.append(
                {"type": 18, "component": text}
                if row["type"] == 18
                else {"type": 1, "components": [text]}
            )
        unknown = set(values) - used
        if unknown:
            raise LookupError(f"the modal has no fields {sorted(unknown)}")
        data = {"custom_id": modal["custom_id"], "components": rows}
        return await self._send_interaction(5, opened.user, opened.channel, data, opened.message)

    async def click(self, message: Message, button: str, *, user: User) -> Interaction:
        """Click the button with this label, emoji or custom_id on a bot message."""
        found = next(
            (b for b in message.buttons() if b.get("custom_id") == button), None
        ) or message.button(button)
        if found.get("disabled"):
            raise ValueError(f"button {button!r} is disabled")
        data = {"custom_id": found["custom_id"], "component_type": 2}
        return await self._send_interaction(3, user, message.channel, data, message)

    async def answered(self, ix: Interaction, timeout: float = 15.0) -> Interaction:
        """Wait until the bot answered the interaction: a message with content, a modal, choices."""

        def done() -> bool:
            if ix.modal is not None or ix.choices is not None:
                return True
            if not ix.callbacks:
                return False
            if ix.callbacks[0][1] in (6, 7) and ix.original is None:
                return True  # a component update: the clicked message is the answer
            return bool(ix.original and not ix.original.flags & 128) or bool(ix.followups)

        await self.wait_until(done, timeout, f"an answer to interaction {ix.data}")
        return ix
