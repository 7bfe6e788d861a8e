"""Shared output of the benchmarks: the machine, a plain table, a JSON file."""

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
