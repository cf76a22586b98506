"""What every benchmark prints besides its own figures: the machine they were taken on, and the choice of
one JSON object (``--json``) or a table for people."""

from __future__ import annotations

import json
import os
from typing import Any, Callable


def machine() -> dict[str, Any]:
    """Cores and load average: on a shared 2-core machine, figures mean little without them."""
    return {"cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def emit(figures: dict[str, Any], as_json: bool, table: Callable[[dict[str, Any]], list[str]]) -> None:
    """Print the figures as one JSON object or as the benchmark's table."""
    print(json.dumps(figures, indent=1) if as_json else "\n".join(table(figures)))
