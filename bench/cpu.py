"""CPU time of a worker's whole process group, read from /proc (Linux).

On a shared machine wall-clock throughput swings with other people's load; CPU
seconds spent per task do not, so they show where a framework's cost lies.
"""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in group `pgid`, plus reaped children."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        # fields[0] is the state (stat field 3): pgrp is field 5, utime..cstime 14..17.
        if int(fields[2]) == pgid:
            total += sum(int(f) for f in fields[11:15])
    return total / _TICK
