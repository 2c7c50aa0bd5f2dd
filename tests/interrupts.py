"""One way for tests to interrupt the owner thread as a user's Ctrl-C would:
a SIGALRM every ``interval`` seconds whose handler raises KeyboardInterrupt
while the alarm is armed.

While the alarm is on, the cyclic garbage collector is off (after one full
collection): a finalizer left by an earlier test (an unclosed socket's
ResourceWarning, say) would otherwise run under the alarm, and an interrupt
inside a finalizer is "unraisable" -- pytest fails the test for it, though
the engine under test did nothing wrong.
"""

from __future__ import annotations

import gc
import signal
from types import FrameType


class Alarm:
    """``armed[0]`` says whether the handler raises; a one-element list so a
    hot loop can flip it without an attribute store on the alarm."""

    def __init__(self, interval: float = 0.0005, *, armed: bool = True) -> None:
        self.interval = interval
        self.armed = [armed]
        self.fired = 0

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.armed[0]:
            self.fired += 1
            raise KeyboardInterrupt

    def __enter__(self) -> Alarm:
        gc.collect()
        gc.disable()
        self._old = signal.signal(signal.SIGALRM, self._handler)
        signal.setitimer(signal.ITIMER_REAL, self.interval, self.interval)
        return self

    def __exit__(self, *exc: object) -> None:
        self.armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, self._old)
        gc.enable()
