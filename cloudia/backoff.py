"""Exponential backoff with jitter, applied through an SQS message's visibility.

A failed job is not retried in the worker's memory: its message is made invisible for the backoff
delay and SQS hands it out again, so a crash between two attempts loses nothing. The delay grows with
the message's `ApproximateReceiveCount` n: base * 2^(n-1) (2 s, 4 s, 8 s ... with the default 2 s
base), spread by +-jitter so that jobs failed together do not come back together, capped, and never
shorter than the provider's `Retry-After`.
"""
from __future__ import annotations

import math
import random

from cloudia.settings import Resilience

# SQS refuses a visibility timeout above 12 hours.
SQS_MAX_VISIBILITY_S = 43_200


def backoff_delay_s(receive_count: int, resilience: Resilience, rng: random.Random | None = None) -> float:
    """The delay before attempt n+1 after attempt n (n >= 1) failed, jitter included."""
    n = max(1, receive_count)
    nominal = min(resilience.backoff_base_s * 2 ** (n - 1), resilience.backoff_max_s)
    spread = nominal * resilience.backoff_jitter_ratio
    return max(0.0, nominal + (rng or random).uniform(-spread, spread))


def visibility_timeout_s(receive_count: int, resilience: Resilience, retry_after_s: float | None = None,
                         rng: random.Random | None = None) -> int:
    """Whole seconds to keep the message hidden (SQS takes integers), honouring `Retry-After`."""
    delay = backoff_delay_s(receive_count, resilience, rng)
    if retry_after_s:
        delay = max(delay, math.ceil(retry_after_s))
    return min(SQS_MAX_VISIBILITY_S, int(round(delay)))
