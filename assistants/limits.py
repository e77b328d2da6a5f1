"""Per-client rate limiting (token bucket), shared by the web UI and the HTTP API."""

from __future__ import annotations

import threading
import time

from .errors import Busy


class RateLimiter:
    """``per_minute`` requests per client, with bursts up to the same number; 0 disables it."""

    def __init__(self, per_minute: int, max_clients: int = 10_000):
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Take one token for ``client`` or raise Busy (HTTP 429) saying when to retry."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                wait = (1 - tokens) / self.rate
                raise Busy(f"too many requests from your address; try again in {wait:.0f} s")
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > self.max_clients:  # forget the idlest clients: memory stays bounded
                for key, _ in sorted(self._buckets.items(), key=lambda kv: kv[1][1])[: self.max_clients // 10]:
                    self._buckets.pop(key, None)
