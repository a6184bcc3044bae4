"""A process's ``/proc/<pid>/stat``: its state and start time (how faasd and runc tell a live process from
an ended one, and a process from another that got its pid)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcStat:
    state: str
    """Field 3: ``R``, ``S``, ``D``, ``Z`` (zombie), ``X`` (dead), ..."""
    start_ticks: int
    """Field 22: when the process started, in clock ticks since boot (runc's ``init_process_start``)."""

    @property
    def ended(self) -> bool:
        """Exited (a zombie not reaped yet, or dead)."""
        return self.state in ("Z", "X")


def read(pid: int) -> ProcStat:
    """``pid``'s state and start time. Raises OSError (FileNotFoundError: no such process) and ValueError or
    IndexError for a line that does not parse."""
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    fields = raw[raw.rindex(b")") + 2 :].split()  # after the command name, which may hold spaces and ')'
    return ProcStat(fields[0].decode(), int(fields[19]))
