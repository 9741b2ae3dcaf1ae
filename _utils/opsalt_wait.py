"""
Waiting until a deadline: the one loop every opsalt module uses to wait for
a process, a socket, a file or a server answer.

Plain Python (no Salt dunders) so it is importable both from the installed
package and as a synced ``_utils`` module.
"""

import time


class Deadline:
    """
    A point ``seconds`` from now, for work that checks the clock as it goes
    (a streamed read) rather than polling: ``passed()`` and ``remaining()``.
    """

    def __init__(self, seconds):
        self.seconds = seconds
        self._at = time.monotonic() + seconds

    def remaining(self):
        """Seconds left, never below 0."""
        return max(0.0, self._at - time.monotonic())

    def passed(self):
        """True once the point is reached."""
        return time.monotonic() >= self._at


def until(predicate, timeout, interval=0.1, max_interval=1.0):
    """
    Call ``predicate()`` until it returns a true value or ``timeout``
    seconds pass; return its last value (false on timeout). The interval
    grows by half each round up to ``max_interval``, so a short wait is
    answered quickly and a long one does not spin.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return value
        time.sleep(min(interval, remaining))
        interval = min(interval * 1.5, max_interval)
