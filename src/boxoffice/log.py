"""Structured logs: one event per line as key=value pairs, carrying the ids to follow an order."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any


def kv(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        parts = [f"event={event}"]
        parts += [f"{k}={json.dumps(v, default=str) if isinstance(v, str) and ' ' in v else v}" for k, v in fields.items()]
        logger.log(level, " ".join(parts))


def configure(level: str | int = "WARNING") -> None:
    """Log to stderr, one line per event; idempotent."""
    root = logging.getLogger("boxoffice")
    root.setLevel(level if isinstance(level, int) else level.upper())
    if not any(getattr(h, "_boxoffice", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        handler._boxoffice = True  # type: ignore[attr-defined]
        root.addHandler(handler)
