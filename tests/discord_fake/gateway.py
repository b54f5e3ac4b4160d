"""The gateway websocket: HELLO, IDENTIFY, READY, GUILD_CREATE, heartbeats, and dispatches."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from .server import FakeDiscord

# Gateway intents (https://discord.com/developers/docs/events/gateway#gateway-intents).
GUILD_MESSAGES = 1 << 9
DIRECT_MESSAGES = 1 << 12
MESSAGE_CONTENT = 1 << 15
HEARTBEAT_INTERVAL_MS = 41250


class Session:
    """One identified client connection."""

    def __init__(self, ws: web.WebSocketResponse, intents: int, session_id: str) -> None:
        self.ws = ws
        self.intents = intents
        self.session_id = session_id
        self.seq = 0

    async def send(self, event: str, data: Any) -> None:
        self.seq += 1
        await self.ws.send_str(json.dumps({"op": 0, "t": event, "s": self.seq, "d": data}))


async def handle_gateway(fake: FakeDiscord, request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    fake.gateway_connections += 1
    await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}}))
    session: Session | None = None
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            payload = json.loads(msg.data)
            op, data = payload.get("op"), payload.get("d")
            if op == 1:  # heartbeat
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:  # identify
                if data.get("token") != fake.token:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                session = Session(ws, int(data.get("intents", 0)), f"session-{id(ws)}")
                fake.identify_payloads.append(data)
                await _ready(fake, session)
                fake.sessions.append(session)
                fake.notify()
            elif op == 8 and session is not None:  # request guild members
                guild = fake.guilds[int(data["guild_id"])]
                await session.send(
                    "GUILD_MEMBERS_CHUNK",
                    {
                        "guild_id": str(guild.id),
                        "members": [m.payload() for m in guild.members.values()],
                        "chunk_index": 0,
                        "chunk_count": 1,
                        "nonce": data.get("nonce"),
                    },
                )
            # op 3 (presence) and 4 (voice) need no answer here
    finally:
        if session in fake.sessions:
            fake.sessions.remove(session)
    return ws


async def _ready(fake: FakeDiscord, session: Session) -> None:
    await session.send(
        "READY",
        {
            "v": 10,
            "user": {**fake.bot.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g), "unavailable": True} for g in fake.guilds],
            "session_id": session.session_id,
            "resume_gateway_url": fake.gateway_url,
            "shard": [0, 1],
            "application": {"id": str(fake.app_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
        },
    )
    for guild in fake.guilds.values():
        await session.send("GUILD_CREATE", guild.payload(fake.bot))


def wants(session: Session, event: str, data: dict, bot_id: int) -> tuple[bool, dict]:
    """Whether a session receives an event under its intents, and the payload it sees."""
    if event not in ("MESSAGE_CREATE", "MESSAGE_UPDATE"):
        return True, data
    in_guild = "guild_id" in data
    needed = GUILD_MESSAGES if in_guild else DIRECT_MESSAGES
    if not session.intents & needed:
        return False, data
    mentioned = any(int(u["id"]) == bot_id for u in data.get("mentions", []))
    own = int(data["author"]["id"]) == bot_id
    if in_guild and not mentioned and not own and not session.intents & MESSAGE_CONTENT:
        # Without the message content intent Discord blanks these fields.
        data = {**data, "content": "", "embeds": [], "attachments": [], "components": []}
    return True, data
