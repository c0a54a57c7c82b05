"""CPU seconds of live processes and their trees, read from Linux /proc (the benches' one reader).

A process's `utime + stime` is its own CPU; `cutime + cstime` what its children used once it
reaped them (a child's CPU moves to its parent when it is reaped), so a tree's CPU is, over its
live processes, own + reaped.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessTable:
    """Every live process at one moment: own CPU, its reaped children's CPU, its live children."""

    own: dict[int, float] = field(default_factory=dict)
    reaped: dict[int, float] = field(default_factory=dict)
    children: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def read(cls) -> ProcessTable:
        table = cls()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # After the command's parenthesis: state, ppid, … utime (14th field) onwards.
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            pid = int(stat.parent.name)
            utime, stime, cutime, cstime = (int(f) / CLOCK_TICKS for f in fields[11:15])
            table.own[pid] = utime + stime
            table.reaped[pid] = cutime + cstime
            table.children[int(fields[1])].append(pid)
        return table

    def tree(self, pid: int) -> float:
        """CPU seconds of `pid` and its descendants, those already reaped included (0 if gone)."""
        total, todo = 0.0, [pid]
        while todo:
            current = todo.pop()
            if current in self.own:
                total += self.own[current] + self.reaped[current]
                todo += self.children.get(current, [])
        return total


def tree_cpu(root: int) -> float:
    """CPU seconds of `root` and its descendants, those already reaped included."""
    return ProcessTable.read().tree(root)
