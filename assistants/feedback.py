"""Feedback on replies: 👍/👎 ratings and corrections ("Improve"), and turning a correction into
an example. Promotion datasets read these: a 👎 reply is left out or replaced by its correction.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from assistants.actor import Actor
from assistants.assistant import Assistants, can_manage, is_visible, now
from assistants.errors import InvalidInput, NotFound, PermissionDenied
from assistants.examples import MAX_FIELD, Example, Examples
from assistants.text import check_text


@dataclass
class Feedback:
    id: int
    message_id: int
    user_id: str
    rating: int | None
    correction: str | None
    example_id: int | None
    created_at: str


class FeedbackBook:
    def __init__(
        self, db: Database, assistants: Assistants, examples: Examples, lock: threading.RLock
    ) -> None:
        self.db = db
        self.assistants = assistants
        self.examples = examples
        self.lock = lock

    def _reply(self, actor: Actor, message_id: int) -> dict[str, Any]:
        rows = list(
            self.db.query(
                "SELECT m.*, c.assistant_id FROM messages m "
                "JOIN conversations c ON c.id = m.conversation_id WHERE m.id = ?",
                [message_id],
            )
        )
        if not rows or rows[0]["role"] != "assistant":
            raise NotFound("That reply is no longer stored, so it cannot take feedback.")
        assistant = self.assistants.by_id(rows[0]["assistant_id"])
        if not is_visible(actor, assistant):
            raise NotFound("That reply is no longer stored, so it cannot take feedback.")
        return rows[0]

    def rate(self, actor: Actor, message_id: int, rating: int) -> Feedback:
        """Record 👍 (+1) or 👎 (-1); a user's later rating of the same reply replaces theirs."""
        if rating not in (1, -1):
            raise InvalidInput("A rating is +1 or -1.")
        self._reply(actor, message_id)
        with self.lock, self.db.conn:
            existing = self.db.execute(
                "SELECT id FROM feedback WHERE message_id = ? AND user_id = ? AND rating IS NOT NULL",
                [message_id, actor.user_id],
            ).fetchone()
            if existing:
                self.db.execute(
                    "UPDATE feedback SET rating = ? WHERE id = ?", [rating, existing[0]]
                )
                feedback_id = existing[0]
            else:
                feedback_id = (
                    self.db.table("feedback")
                    .insert(
                        {
                            "message_id": message_id,
                            "user_id": actor.user_id,
                            "rating": rating,
                            "created_at": now(),
                        }
                    )
                    .last_pk
                )
        return self.get(int(feedback_id))  # type: ignore[arg-type]

    def improve(self, actor: Actor, message_id: int, better_answer: str) -> Feedback:
        """Store a better answer for a reply, as a correction."""
        text = better_answer.strip()
        if not text:
            raise InvalidInput("The better answer is empty.")
        check_text(text, "The better answer")
        if len(text) > MAX_FIELD:
            raise InvalidInput(f"The better answer is longer than {MAX_FIELD:,} characters.")
        self._reply(actor, message_id)
        with self.lock, self.db.conn:
            feedback_id = (
                self.db.table("feedback")
                .insert(
                    {
                        "message_id": message_id,
                        "user_id": actor.user_id,
                        "correction": text,
                        "created_at": now(),
                    }
                )
                .last_pk
            )
        return self.get(int(feedback_id))  # type: ignore[arg-type]

    def get(self, feedback_id: int) -> Feedback:
        rows = list(self.db.query("SELECT * FROM feedback WHERE id = ?", [feedback_id]))
        if not rows:
            raise NotFound(f"Feedback #{feedback_id} no longer exists.")
        return Feedback(**rows[0])

    def correction_to_example(self, actor: Actor, feedback_id: int) -> Example:
        """Turn a correction into an example (the user's message → the better answer)."""
        feedback = self.get(feedback_id)
        if not feedback.correction:
            raise InvalidInput(f"Feedback #{feedback_id} holds no correction.")
        reply = self._reply(actor, feedback.message_id)
        assistant = self.assistants.by_id(reply["assistant_id"])
        if not can_manage(actor, assistant):
            raise PermissionDenied(
                f"Only the owner of {assistant.name!r} or a member with Manage Server may add examples to it."
            )
        asked = self.db.execute(
            "SELECT content FROM messages WHERE conversation_id = ? AND id < ? AND role = 'user' "
            "ORDER BY id DESC LIMIT 1",
            [reply["conversation_id"], reply["id"]],
        ).fetchone()
        if not asked:
            raise NotFound("The message that reply answered is no longer stored.")
        example = self.examples.add_correction(
            assistant, asked[0], feedback.correction, actor.user_id
        )
        with self.lock, self.db.conn:
            self.db.execute(
                "UPDATE feedback SET example_id = ? WHERE id = ?", [example.id, feedback_id]
            )
        return example

    def corrections(self, actor: Actor, name: str) -> list[Feedback]:
        """Corrections of an assistant's replies not yet turned into examples (for its owner)."""
        assistant = self.assistants.get_managed(actor, name, "review corrections of")
        rows = self.db.query(
            "SELECT f.* FROM feedback f JOIN messages m ON m.id = f.message_id "
            "JOIN conversations c ON c.id = m.conversation_id "
            "WHERE c.assistant_id = ? AND f.correction IS NOT NULL AND f.example_id IS NULL "
            "ORDER BY f.id",
            [assistant.id],
        )
        return [Feedback(**r) for r in rows]
