"""`python -m worker COMMAND`: the only place that configures logging."""

from __future__ import annotations

import logging
import os
import sys

from worker.cli import main

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def configure_logging() -> None:
    """Single-line, key=value-ish logs on stderr; level from QSCALE_LOG_LEVEL.

    An invalid level falls back to INFO here; the settings loader rejects it with
    a proper one-line error right after.
    """
    level = os.environ.get("QSCALE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level if level in _LEVELS else "INFO",
        format="%(asctime)s level=%(levelname)s pid=%(process)d logger=%(name)s %(message)s",
        stream=sys.stderr,
    )


if __name__ == "__main__":
    configure_logging()
    sys.exit(main())
