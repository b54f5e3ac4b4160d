"""Point discord.py at a Discord-compatible server other than discord.com.

discord.py has no option for this, so two class attributes are set, once, before the client logs in:
- `discord.http.Route.BASE`: every REST call (and interaction webhooks, which use the same Route)
  is built from it; FEWTUNE_DISCORD_API_BASE replaces it, e.g. http://127.0.0.1:PORT/api/v10.
- `DiscordWebSocket.DEFAULT_GATEWAY`: a non-sharded client connects there first (and after an
  invalidated session); FEWTUNE_DISCORD_GATEWAY replaces it, e.g. ws://127.0.0.1:PORT/.
  Resumes go to READY's `resume_gateway_url`, which such a server sets to itself.
Attachments are downloaded from the URLs the server puts in them, so they need nothing here.
"""

from __future__ import annotations

import os

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

DISCORD_API_BASE = "https://discord.com/api/v10"
DISCORD_GATEWAY = "wss://gateway.discord.gg/"


def redirect(api_base: str | None = None, gateway: str | None = None) -> None:
    """Use these endpoints (default: the environment, else discord.com) for every client after."""
    api = api_base or os.environ.get("FEWTUNE_DISCORD_API_BASE") or DISCORD_API_BASE
    ws = gateway or os.environ.get("FEWTUNE_DISCORD_GATEWAY") or DISCORD_GATEWAY
    Route.BASE = api.rstrip("/")
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(ws)
