"""Token buckets: the rate limits of task submissions (per app) and of WebSocket frames (per
socket). Each gateway process keeps its own; nothing here is shared between gateways."""

import time
from typing import Final

IDLE_KEYS_KEPT: Final = 10_000
"""KeyedBuckets forgets full buckets once it holds more keys than this: a full bucket is the
same as a new one, so forgetting it changes no answer and bounds the memory many ids cost."""


class TokenBucket:
    """`burst` tokens, refilled at `rate_per_s`; each admitted event takes one."""

    __slots__ = ("_at", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._at = time.monotonic()

    def take(self) -> float:
        """0.0 when admitted, else the seconds until a token is free (nothing is taken)."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate_per_s

    def is_full(self) -> bool:
        elapsed = time.monotonic() - self._at
        return self._tokens + elapsed * self.rate_per_s >= self.burst


class KeyedBuckets:
    """One TokenBucket per key (an app id)."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= IDLE_KEYS_KEPT:
                self._forget_full()
            bucket = self._buckets[key] = TokenBucket(self.rate_per_s, self.burst)
        return bucket.take()

    def _forget_full(self) -> None:
        for key in [key for key, bucket in self._buckets.items() if bucket.is_full()]:
            del self._buckets[key]


class FrameRate:
    """The frame limit of one socket. Over the limit a frame is refused; a socket that has been
    refused as many frames as it may send in a second, with no second free of refusals in
    between, has kept on and is to be closed."""

    __slots__ = ("_bucket", "_last_refusal", "_refused", "limit")

    def __init__(self, frames_per_s: float) -> None:
        self.limit = frames_per_s
        self._bucket = TokenBucket(frames_per_s, max(frames_per_s, 1.0))
        self._refused = 0
        self._last_refusal = 0.0

    def admit(self) -> float:
        """0.0 when the frame is admitted, else the seconds until one would be."""
        wait_s = self._bucket.take()
        if wait_s == 0.0:
            return 0.0
        now = time.monotonic()
        if now - self._last_refusal >= 1.0:
            self._refused = 0
        self._refused += 1
        self._last_refusal = now
        return wait_s

    @property
    def kept_on(self) -> bool:
        return self._refused >= self.limit
