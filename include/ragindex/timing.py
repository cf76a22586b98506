"""How long the steps of a task took, for the one line it logs about what it did."""

from __future__ import annotations

import time


class Steps:
    """Seconds per named step: each ``done(name)`` closes the step that began at the previous one (or at the
    start); a name given twice adds up."""

    def __init__(self) -> None:
        self.started = self.mark = time.monotonic()
        self.seconds: dict[str, float] = {}

    def done(self, name: str) -> None:
        """The step ``name`` ends now."""
        now = time.monotonic()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.mark
        self.mark = now

    def total(self) -> float:
        """Seconds since the task started."""
        return time.monotonic() - self.started

    def __str__(self) -> str:
        """``4.2 s (snapshot 3.1 s, log 0.9 s)``."""
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.seconds.items())
        return f"{self.total():.1f} s" + (f" ({parts})" if parts else "")
