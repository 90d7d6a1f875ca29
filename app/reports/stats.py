"""The report's arithmetic (pure): Wilson intervals and the two-proportion z-test.

Click-through is a proportion, clicks out of exposures. Its 95% interval is Wilson's score interval,
which stays inside [0, 1] and behaves at small counts and rates near 0, where the normal ("Wald")
interval does not. Whether a variant's rate differs from the control's is the two-sided
two-proportion z-test with the pooled proportion; its p-value is the chance of a difference at least
this large if both variants had the same rate. The test needs a few clicks in each arm (about 5 or
more) to be trustworthy; with fewer, read the intervals rather than p.
"""

from __future__ import annotations

import math
from typing import NamedTuple

Z95 = 1.959963984540054  # the standard normal quantile of 0.975


class Interval(NamedTuple):
    low: float
    high: float


class Test(NamedTuple):
    z: float
    p_value: float


def wilson(successes: float, trials: float, z: float = Z95) -> Interval:
    """Wilson score interval of ``successes / trials`` (both may be estimates, so floats); for no
    trials, the whole of [0, 1]."""
    if trials <= 0:
        return Interval(0.0, 1.0)
    p = min(max(successes / trials, 0.0), 1.0)
    z2n = z * z / trials
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / trials + z2n / (4 * trials)) / (1 + z2n)
    return Interval(max(centre - half, 0.0), min(centre + half, 1.0))


def two_proportion_test(x1: float, n1: float, x2: float, n2: float) -> Test | None:
    """Two-sided pooled z-test of ``x2 / n2`` against ``x1 / n1``; None when it is undefined (an arm
    with no trials, or no variation at all: every trial a success, or none)."""
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance <= 0:
        return None
    z = (x2 / n2 - x1 / n1) / math.sqrt(variance)
    return Test(z, p_value(z))


def p_value(z: float) -> float:
    """Two-sided p-value of a standard normal statistic: 2 * (1 - Phi(|z|)) = erfc(|z| / sqrt 2)."""
    return math.erfc(abs(z) / math.sqrt(2))
