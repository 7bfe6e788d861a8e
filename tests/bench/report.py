"""Shared output of the benchmarks: the machine and its load, a plain table, a JSON file, a docs result file."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine() -> str:
    """One line naming the machine the figures come from."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, {platform.system()}, Python {platform.python_version()}, no GPU"


def cpu_times() -> list[int]:
    """The machine's CPU time counters (user … steal) from /proc/stat, or [] where there is none."""
    try:
        return [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return []


def steal_since(before: list[int]) -> str:
    """Share of CPU time the hypervisor took from this VM since `before`: noise in every figure."""
    after = cpu_times()
    if not before or not after:
        return "steal n/a"
    spent = [b - a for a, b in zip(before, after)]
    return f"CPU steal {spent[7] / max(1, sum(spent)):.0%}"


class Conditions:
    """How busy the machine was from now until `describe()`: the noise in every figure taken meanwhile."""

    def __init__(self) -> None:
        self.load = os.getloadavg()[0]
        self.cpu = cpu_times()

    def describe(self) -> str:
        """The machine, its one-minute load average at the start and now (2 cores: above 2 it is shared), steal."""
        return (
            f"{machine()}; load average {self.load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
            f"{steal_since(self.cpu)}."
        )


def print_table(title: str, rows: list[dict]) -> None:
    """Print rows of equal keys as an aligned table under a title."""
    print(f"\n{title}")
    if not rows:
        return
    keys = list(rows[0])
    widths = {key: max(len(key), *(len(str(row[key])) for row in rows)) for key in keys}
    print("  ".join(key.rjust(widths[key]) for key in keys))
    for row in rows:
        print("  ".join(str(row[key]).rjust(widths[key]) for key in keys))


def write_json(path: str | Path, data: dict) -> None:
    """Write the figures as JSON, creating the folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
