"""A user's say over their data: opt out of collection for training, opt back in, or forget.

Opted-out users still chat (their messages are kept as conversation history) but are left out of
every training dataset. `forget` deletes the user's messages everywhere, with the replies they
received and their feedback, and conversations left empty.
"""

from __future__ import annotations

import threading

from sqlite_utils import Database

from assistants.assistant import now


class Privacy:
    def __init__(self, db: Database, lock: threading.RLock) -> None:
        self.db = db
        self.lock = lock

    def _set(self, user_id: str, opted_out: bool) -> None:
        with self.lock, self.db.conn:
            self.db.execute(
                "INSERT INTO user_preferences (user_id, opted_out, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(user_id) DO UPDATE SET opted_out = excluded.opted_out, "
                "updated_at = excluded.updated_at",
                [user_id, int(opted_out), now()],
            )

    def opt_out(self, user_id: str) -> None:
        self._set(user_id, True)

    def opt_in(self, user_id: str) -> None:
        self._set(user_id, False)

    def is_opted_out(self, user_id: str) -> bool:
        row = self.db.execute(
            "SELECT opted_out FROM user_preferences WHERE user_id = ?", [user_id]
        ).fetchone()
        return bool(row and row[0])

    def forget(self, user_id: str) -> int:
        """Delete everything the user said (and the replies to it); returns how many of their own
        messages were deleted."""
        with self.lock, self.db.conn:
            said = self.db.execute(
                "SELECT count(*) FROM messages WHERE user_id = ? AND role = 'user'", [user_id]
            ).fetchone()[0]
            self.db.execute("DELETE FROM feedback WHERE user_id = ?", [user_id])
            self.db.execute("DELETE FROM messages WHERE user_id = ?", [user_id])
            self.db.execute(
                "DELETE FROM conversations WHERE user_id = ? AND NOT EXISTS "
                "(SELECT 1 FROM messages m WHERE m.conversation_id = conversations.id)",
                [user_id],
            )
        return int(said)
