"""The engine knows nothing of Discord: importing it never imports discord.py."""

import subprocess
import sys
from pathlib import Path

import hxhbot.engine


def test_engine_never_imports_discord() -> None:
    modules = sorted(p.stem for p in Path(hxhbot.engine.__file__).parent.glob("*.py"))
    code = (
        "import sys\n"
        f"for name in {modules!r}:\n"
        "    __import__('hxhbot.engine.' + name)\n"
        "print(sorted(m for m in sys.modules if m == 'discord' or m.startswith('discord.')))\n"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert found == "[]", f"the engine imported {found}"
