"""An exponentially weighted moving average for metric samples taken at irregular times.

The usual EWMA ``s = s + alpha * (x - s)`` assumes samples at a fixed period.  A control loop's
samples drift (a slow control-socket answer, a busy CPU), so the weight here comes from the time
that passed: ``alpha = 1 - exp(-dt / tau)``.  ``tau`` is the time constant in seconds: after a step
in the input, the average has covered 63 % of the step after ``tau`` seconds and 95 % after
``3 * tau``.  For a fixed period ``dt`` this is the classic EWMA with ``alpha ~= dt / tau`` (when
``dt`` is much smaller than ``tau``).  ``tau = 0`` switches smoothing off (the last sample wins).

Why smooth at all: a per-second rate of new flows is noisy (a Poisson arrival process at 50 flows/s
varies by about +-14 % from one second to the next); a policy fed raw samples would flap around its
tolerance band.  The price is lag: the smoothed value reacts to a real step about ``tau`` late.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Ewma:
    tau: float  # time constant, seconds (0: no smoothing)
    value: float | None = None  # None until the first sample
    time: float | None = None  # time of the last sample

    def __post_init__(self) -> None:
        if not (self.tau >= 0 and math.isfinite(self.tau)):
            raise ValueError(f"tau {self.tau!r}: expected a finite number of seconds >= 0")

    def update(self, sample: float, time: float) -> Ewma:
        """The average after ``sample`` taken at ``time`` (a new object; this one is unchanged).

        The first sample is taken as it is.  A sample at or before the previous time (a clock that did
        not move) changes nothing but is not lost either: it counts with the weight of a zero interval.
        """
        if self.value is None or self.time is None or self.tau == 0:
            return replace(self, value=float(sample), time=time)
        dt = max(time - self.time, 0.0)
        alpha = 1.0 - math.exp(-dt / self.tau)
        return replace(self, value=self.value + alpha * (sample - self.value), time=max(time, self.time))


__all__ = ["Ewma"]
