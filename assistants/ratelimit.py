"""A per-user sliding-window limit on chat messages (settings.chat.rate_limit_per_minute).

A frontend holds one and hands it to `Chat.answer`, which hits it only once a message is known
to be answered (a message not addressed to fewtune costs nothing).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable


class UserRateLimiter:
    """At most `per_minute` messages per user in any 60 seconds; 0 turns the limit off."""

    def __init__(
        self, per_minute: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self.window = window
        self.clock = clock
        self._hits: defaultdict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()  # hit from the core's threads, several at once

    def hit(self, user_id: str) -> float:
        """Record a message and return 0, or return the seconds to wait (recording nothing)."""
        if self.per_minute <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            hits = self._hits[user_id]
            while hits and now - hits[0] >= self.window:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return self.window - (now - hits[0])
            hits.append(now)
            return 0.0


def slow_down(seconds: float) -> str:
    """The sentence for a user over the limit."""
    return f"You are sending messages quickly; try again in {max(1, round(seconds))} seconds."
