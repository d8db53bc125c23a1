"""CPU seconds spent by this process and by others (Linux /proc): the benchmarks and the chaos suite
print them side by side, so a reader sees whose CPU bounds a figure, our processes' or the emulator's."""
from __future__ import annotations

import os
import resource
from pathlib import Path


def own_cpu_s() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another (running) process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # after the name, spaces and all
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
