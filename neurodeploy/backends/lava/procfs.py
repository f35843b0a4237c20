"""The kernel's process table (/proc), read without psutil: both sides of the Lava backend
watch processes with it (the parent its worker's group, the worker Lava's own processes).
Plain Python: the Lava runtime imports it."""
from __future__ import annotations

import os


def stats():
    """(pid, fields) for every process: the fields of /proc/PID/stat after the command name,
    so fields[0] is the state, [1] the parent pid, [2] the process group, [49] the exit code."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                yield int(entry.name), f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue


def live_in_group(pgid: int) -> list:
    """The pids of the process group that still run (zombies, which hold no files, do not count)."""
    return [pid for pid, stat in stats() if int(stat[2]) == pgid and stat[0] not in (b"Z", b"X")]
