"""Who acts, and where: every core call takes an Actor so permissions live in one place."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

LOCAL_USER = "local"


@dataclass(frozen=True)
class Actor:
    """A user in a place. In the terminal: the local user, no guild."""

    user_id: str = LOCAL_USER
    guild_id: str | None = None  # the Discord guild where it happens; None in DMs and the terminal
    can_manage_guild: bool = False  # Discord "Manage Server" in that guild

    @property
    def scope(self) -> str:
        """Where names are unique: a guild, or the user's own space (DMs and the terminal)."""
        return f"guild:{self.guild_id}" if self.guild_id else f"user:{self.user_id}"

    def to_dict(self) -> dict[str, Any]:
        """The actor as JSON-ready values, to act as them later (a resumed promotion)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Actor:
        """The actor `to_dict` wrote."""
        return cls(
            user_id=str(data["user_id"]),
            guild_id=data.get("guild_id"),
            can_manage_guild=bool(data.get("can_manage_guild")),
        )


TERMINAL = Actor()
