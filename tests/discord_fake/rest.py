"""REST v10: the routes discord.py calls, with Discord's payload shapes and error codes."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .records import Attachment, Channel, Interaction, Message, snowflake

if TYPE_CHECKING:
    from .server import FakeDiscord

INTERACTION_ACK_SECONDS = 3.0
LOADING = 128
EPHEMERAL = 64


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    """JSON with Discord's exact content type: discord.py parses only `application/json`."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def error(status: int, message: str, code: int = 0) -> web.Response:
    return json_response({"message": message, "code": code}, status=status)


def no_content() -> web.Response:
    return web.Response(status=204)


async def read_body(fake: FakeDiscord, request: web.Request) -> tuple[dict, list[Attachment]]:
    """JSON body, or multipart with payload_json and files[n] (uploads become served files)."""
    if not request.can_read_body:
        return {}, []
    if not request.content_type.startswith("multipart/"):
        return await request.json(), []
    body: dict = {}
    files: list[Attachment] = []
    reader = await request.multipart()
    async for part in reader:
        name = part.name or ""
        if name == "payload_json":
            body = json.loads(await part.text())
        else:
            data = await part.read(decode=False)
            files.append(fake.new_attachment(part.filename or "file", bytes(data)))
    return body, files


class Rest:
    """Route handlers bound to one FakeDiscord."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    def routes(self) -> list[web.RouteDef]:
        p = "/api/v10"
        a = "/applications/{app}"
        w = "/webhooks/{app}/{token}"
        return [
            web.get(p + "/gateway", self.gateway),
            web.get(p + "/gateway/bot", self.gateway_bot),
            web.get(p + "/users/@me", self.me),
            web.get(p + "/oauth2/applications/@me", self.application),
            web.get(p + "/applications/@me", self.application),
            web.get(p + a + "/commands", self.get_commands),
            web.put(p + a + "/commands", self.put_commands),
            web.get(p + a + "/guilds/{guild}/commands", self.get_commands),
            web.put(p + a + "/guilds/{guild}/commands", self.put_commands),
            web.post(p + "/interactions/{id}/{token}/callback", self.callback),
            web.post(p + w, self.followup),
            web.get(p + w + "/messages/{message}", self.webhook_get),
            web.patch(p + w + "/messages/{message}", self.webhook_edit),
            web.delete(p + w + "/messages/{message}", self.webhook_delete),
            web.get(p + "/channels/{channel}", self.get_channel),
            web.get(p + "/channels/{channel}/messages", self.history),
            web.post(p + "/channels/{channel}/messages", self.create_message),
            web.get(p + "/channels/{channel}/messages/{message}", self.get_message),
            web.patch(p + "/channels/{channel}/messages/{message}", self.edit_message),
            web.delete(p + "/channels/{channel}/messages/{message}", self.delete_message),
            web.post(p + "/channels/{channel}/messages/{message}/threads", self.thread_from),
            web.post(p + "/channels/{channel}/threads", self.thread_in),
            web.put(p + "/channels/{channel}/messages/{message}/reactions/{emoji}/@me", self.react),
            web.delete(
                p + "/channels/{channel}/messages/{message}/reactions/{emoji}/@me", self.unreact
            ),
            web.post(p + "/channels/{channel}/typing", self.typing),
            web.post(p + "/users/@me/channels", self.open_dm),
            web.get("/attachments/{id}/{filename}", self.cdn),
        ]

    # --- login ---------------------------------------------------------------------------

    async def gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.fake.gateway_url})

    async def gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return json_response(
            {"url": self.fake.gateway_url, "shards": 1, "session_start_limit": limit}
        )

    async def me(self, request: web.Request) -> web.Response:
        return json_response({**self.fake.bot.payload(), "verified": True, "flags": 0})

    async def application(self, request: web.Request) -> web.Response:
        f = self.fake
        return json_response(
            {
                "id": str(f.app_id),
                "name": f.bot.name,
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": f.app_owner.payload(),
                "verify_key": "0" * 64,
                "flags": 0,
                "team": None,
                "summary": "",
                "bot": f.bot.payload(),
                "interactions_endpoint_url": None,
                "redirect_uris": [],
                "approximate_guild_count": len(f.guilds),
                "integration_types_config": {"0": {}},
            }
        )

    # --- application commands ---------------------------------------------------------------

    async def get_commands(self, request: web.Request) -> web.Response:
        guild = request.match_info.get("guild")
        return json_response(self.fake.commands.get(int(guild) if guild else None, []))

    async def put_commands(self, request: web.Request) -> web.Response:
        guild_text = request.match_info.get("guild")
        guild = int(guild_text) if guild_text else None
        if guild is not None and guild not in self.fake.guilds:
            return error(404, "Unknown Guild", 10004)
        body = await request.json()
        stored = []
        for cmd in body:
            stored.append(
                {
                    "id": str(snowflake()),
                    "application_id": str(self.fake.app_id),
                    "version": str(snowflake()),
                    "type": cmd.get("type", 1),
                    "description": cmd.get("description", ""),
                    "options": cmd.get("options", []),
                    "default_member_permissions": cmd.get("default_member_permissions"),
                    "dm_permission": cmd.get("dm_permission", True),
                    "nsfw": cmd.get("nsfw", False),
                    "contexts": cmd.get("contexts"),
                    "integration_types": cmd.get("integration_types", [0]),
                    **({"guild_id": str(guild)} if guild else {}),
                    **cmd,
                }
            )
        self.fake.commands[guild] = stored
        self.fake.command_syncs.append((time.time(), guild))
        self.fake.notify()
        return json_response(stored)

    # --- interactions ------------------------------------------------------------------------

    def _interaction(self, request: web.Request) -> Interaction | None:
        ix = self.fake.interactions.get(int(request.match_info.get("id", 0) or 0))
        token = request.match_info["token"]
        if ix is None:
            ix = next((i for i in self.fake.interactions.values() if i.token == token), None)
        if ix is None or ix.token != token:
            return None
        return ix

    async def callback(self, request: web.Request) -> web.Response:
        ix = self._interaction(request)
        if ix is None:
            return error(404, "Unknown interaction", 10062)
        if ix.callbacks:
            return error(400, "Interaction has already been acknowledged.", 40060)
        if time.time() - ix.created_at > INTERACTION_ACK_SECONDS:
            return error(404, "Unknown interaction", 10062)
        body, files = await read_body(self.fake, request)
        kind, data = body["type"], body.get("data") or {}
        ix.callbacks.append((time.time(), kind, data))
        resource: dict[str, Any] = {"type": kind}
        message: Message | None = None
        if kind in (4, 5):
            flags = int(data.get("flags", 0)) | (LOADING if kind == 5 else 0)
            message = self.fake.new_message(ix.channel, self.fake.bot, data, files, flags=flags)
            message.interaction = ix
            ix.original = message
            await self.fake.publish(message)
        elif kind == 7 and ix.message is not None:
            self.fake.apply_edit(ix.message, data, files)
            message = ix.message
            await self.fake.publish_update(message)
        elif kind == 8:
            ix.choices = data.get("choices", [])
        elif kind == 9:
            ix.modal = data
        elif kind != 6:
            return error(400, f"Invalid interaction response type {kind}", 50035)
        if message is not None:
            resource["message"] = self.fake.payload(message)
        ix.changed.set()
        self.fake.notify()
        return json_response(
            {
                "interaction": {
                    "id": str(ix.id),
                    "type": ix.type,
                    "response_message_id": str(message.id) if message else None,
                    "response_message_loading": kind == 5,
                    "response_message_ephemeral": bool(message and message.ephemeral),
                },
                "resource": resource,
            }
        )

    def _webhook_target(self, ix: Interaction, message_id: str) -> Message | None:
        if message_id == "@original":
            if ix.original is None and ix.callbacks and ix.callbacks[0][1] in (6, 7):
                return ix.message  # a deferred component update edits the clicked message
            return ix.original
        return next((m for m in ix.messages() if m.id == int(message_id)), None)

    async def followup(self, request: web.Request) -> web.Response:
        ix = self._interaction(request)
        if ix is None or not ix.callbacks:
            return error(404, "Unknown Webhook", 10015)
        body, files = await read_body(self.fake, request)
        original = ix.original
        loading = original is not None and original.flags & LOADING and not original.edits
        if loading and not original.deleted:
            # Discord fills a deferred "thinking" response with the first follow-up.
            original.flags &= ~LOADING
            self.fake.apply_edit(original, body, files)
            message = original
            await self.fake.publish_update(message)
        else:
            flags = int(body.get("flags", 0))
            message = self.fake.new_message(ix.channel, self.fake.bot, body, files, flags=flags)
            message.interaction = ix
            ix.followups.append(message)
            await self.fake.publish(message)
        ix.changed.set()
        self.fake.notify()
        return json_response(self.fake.payload(message))

    async def webhook_get(self, request: web.Request) -> web.Response:
        ix = self._interaction(request)
        message = ix and self._webhook_target(ix, request.match_info["message"])
        if message is None:
            return error(404, "Unknown Message", 10008)
        return json_response(self.fake.payload(message))

    async def webhook_edit(self, request: web.Request) -> web.Response:
        ix = self._interaction(request)
        message = ix and self._webhook_target(ix, request.match_info["message"])
        if ix is None or message is None:
            return error(404, "Unknown Message", 10008)
        body, files = await read_body(self.fake, request)
        message.flags &= ~LOADING
        self.fake.apply_edit(message, body, files)
        await self.fake.publish_update(message)
        ix.changed.set()
        self.fake.notify()
        return json_response(self.fake.payload(message))

    async def webhook_delete(self, request: web.Request) -> web.Response:
        ix = self._interaction(request)
        message = ix and self._webhook_target(ix, request.match_info["message"])
        if message is None:
            return error(404, "Unknown Message", 10008)
        message.deleted = True
        self.fake.notify()
        return no_content()

    # --- channels and messages ---------------------------------------------------------------

    def _channel(self, request: web.Request) -> Channel | None:
        return self.fake.channels.get(int(request.match_info["channel"]))

    def _message(self, request: web.Request) -> Message | None:
        message = self.fake.messages.get(int(request.match_info["message"]))
        if message is None or message.deleted:
            return None
        if message.channel.id != int(request.match_info["channel"]):
            return None
        return message

    async def get_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel is None:
            return error(404, "Unknown Channel", 10003)
        return json_response(channel.payload())

    async def history(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel is None:
            return error(404, "Unknown Channel", 10003)
        limit = int(request.query.get("limit", 50))
        visible = [m for m in channel.messages if not m.deleted and not m.ephemeral]
        before = request.query.get("before")
        if before:
            visible = [m for m in visible if m.id < int(before)]
        newest_first = list(reversed(visible))[:limit]
        return json_response([self.fake.payload(m) for m in newest_first])

    async def create_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel is None:
            return error(404, "Unknown Channel", 10003)
        body, files = await read_body(self.fake, request)
        if not (body.get("content") or body.get("embeds") or files or body.get("components")):
            return error(400, "Cannot send an empty message", 50006)
        if len(body.get("content") or "") > 2000:
            return error(400, "Invalid Form Body: content must be 2000 or fewer in length.", 50035)
        message = self.fake.new_message(channel, self.fake.bot, body, files)
        ref = body.get("message_reference")
        if ref:
            message.reference = self.fake.messages.get(int(ref["message_id"]))
        await self.fake.publish(message)
        self.fake.notify()
        return json_response(self.fake.payload(message))

    async def get_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message is None:
            return error(404, "Unknown Message", 10008)
        return json_response(self.fake.payload(message))

    async def edit_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message is None:
            return error(404, "Unknown Message", 10008)
        if message.author.id != self.fake.bot.id:
            return error(403, "Cannot edit a message authored by another user", 50005)
        body, files = await read_body(self.fake, request)
        if len(body.get("content") or "") > 2000:
            return error(400, "Invalid Form Body: content must be 2000 or fewer in length.", 50035)
        self.fake.apply_edit(message, body, files)
        await self.fake.publish_update(message)
        self.fake.notify()
        return json_response(self.fake.payload(message))

    async def delete_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message is None:
            return error(404, "Unknown Message", 10008)
        message.deleted = True
        self.fake.notify()
        return no_content()

    async def thread_from(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message is None:
            return error(404, "Unknown Message", 10008)
        if message.thread is not None:
            return error(400, "A thread has already been created for this message", 160004)
        body = await request.json()
        # A thread started from a message has the message's id.
        thread = self.fake.new_thread(message.channel, body.get("name", "thread"), message.id)
        message.thread = thread
        await self.fake.dispatch("THREAD_CREATE", {**thread.payload(), "newly_created": True})
        self.fake.notify()
        return json_response(thread.payload())

    async def thread_in(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel is None:
            return error(404, "Unknown Channel", 10003)
        body = await request.json()
        thread = self.fake.new_thread(channel, body.get("name", "thread"), snowflake())
        await self.fake.dispatch("THREAD_CREATE", {**thread.payload(), "newly_created": True})
        self.fake.notify()
        return json_response(thread.payload())

    async def react(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message is None:
            return error(404, "Unknown Message", 10008)
        message.reactions.append(request.match_info["emoji"])
        self.fake.notify()
        return no_content()

    async def unreact(self, request: web.Request) -> web.Response:
        message = self._message(request)
        emoji = request.match_info["emoji"]
        if message is None or emoji not in message.reactions:
            return error(404, "Unknown Emoji", 10014)
        message.reactions.remove(emoji)
        self.fake.notify()
        return no_content()

    async def typing(self, request: web.Request) -> web.Response:
        if self._channel(request) is None:
            return error(404, "Unknown Channel", 10003)
        self.fake.typing.append(int(request.match_info["channel"]))
        return no_content()

    async def open_dm(self, request: web.Request) -> web.Response:
        body = await request.json()
        user = self.fake.users.get(int(body["recipient_id"]))
        if user is None:
            return error(404, "Unknown User", 10013)
        return json_response(self.fake.dm_channel(user).payload())

    async def cdn(self, request: web.Request) -> web.Response:
        attachment = self.fake.attachments.get(int(request.match_info["id"]))
        if attachment is None or attachment.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        return web.Response(
            body=attachment.data, content_type=attachment.content_type or "application/octet-stream"
        )
