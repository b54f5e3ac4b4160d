"""Where a message came from, in no frontend's words: the core decides from it which assistant
answers and which conversation the message continues (`Chat.resolve`)."""

from __future__ import annotations

from dataclasses import dataclass

from assistants.errors import NotFound


@dataclass(frozen=True)
class Origin:
    """One message's place. The terminal's is the default: no channel, addressed to fewtune."""

    frontend: str = "cli"
    assistant: str | None = None  # named by the user (`/chat NAME`, `fewtune ask NAME`)
    conversation_id: int | None = None  # go on with this one (the terminal's chat)
    channel_id: str | None = None  # where it was written; in a thread, the thread
    thread_id: str | None = None
    parent_id: str | None = None  # a thread's channel
    dm: bool = False  # a direct message: the user's last-used assistant answers
    addressed: bool = True  # mentions fewtune (or is a command); else only threads, replies, DMs
    replies_to: str | None = None  # the frontend's id of the message it replies to
    # When that is one of fewtune's answers: the message or `interaction:ID` it answered. An
    # answer is linked only once posted; a user replying quicker is still found through this.
    answer_to: str | None = None
    external_id: str | None = None  # the frontend's id of this message (or `interaction:ID`)


class NoAssistant(NotFound):
    """No assistant answers this message: the channel is bound to none, or (in a DM) the user
    has not picked one yet. Frontends say how to pick one in their own words."""

    def __init__(self, dm: bool) -> None:
        self.dm = dm
        super().__init__(
            "Pick an assistant first; after that, just talk to me here."
            if dm
            else "No assistant answers in this channel: name one, or bind one here."
        )
