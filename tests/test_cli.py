"""`python -m hxhbot index` and `whois`, run as a user would, offline on a generated gallery."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hxhbot import cli

ROOT = Path(__file__).parent.parent


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hxhbot", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )


@pytest.fixture
def env(model_dir: Path, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MODEL_DIR": str(model_dir),
        "INDEX_DIR": str(tmp_path / "index"),
        "GALLERY_DIR": str(tmp_path / "unused"),
    }


def test_index_then_whois(gallery: Path, env: dict[str, str], tmp_path: Path) -> None:
    (gallery / "Kurapika" / "bad.png").write_bytes(b"not a png")
    os.mkfifo(gallery / "Kurapika" / "pipe.jpg")  # reading it would wait for a writer for ever
    (gallery / "Gon Freecss" / "zero.png").symlink_to("/dev/zero")  # ... or fill the memory
    built = run("index", "--gallery", str(gallery), env=env)
    assert built.returncode == 0, built.stderr
    assert "4 characters, 16 images, 3 skipped" in built.stdout and "gallery check" in built.stdout
    assert "confidence names from 99%, not fitted to this gallery: too few pictures to fit one" in built.stdout
    assert "bad.png: This file is not an image." in built.stderr
    assert "pipe.jpg: This is a pipe, not an image file." in built.stderr
    assert "zero.png: This is a device, not an image file." in built.stderr
    lines = built.stderr.splitlines()
    progress = [line for line in lines if line.startswith("indexing ")]
    assert progress[-1] == "indexing 19/19" and len(progress) <= 11 and "\r" not in built.stderr  # a log, not a bar
    assert lines[lines.index("indexing 19/19") + 1].startswith("skipped ")  # no blank line to end a bar

    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"")
    query = gallery / "Leorio Paradinight" / "03.jpg"
    answer = run(
        "whois",
        str(query),
        str(junk),
        str(tmp_path / "missing.png"),
        str(gallery / "Kurapika" / "pipe.jpg"),
        "/dev/zero",
        str(gallery),
        "--json",
        "--top",
        "2",
        env=env,
    )
    assert answer.returncode == 1  # some images could not be read
    lines = [json.loads(line) for line in answer.stdout.splitlines()]
    assert lines[0]["image"] == str(query)
    [character] = lines[0]["characters"]  # no face in a generated picture: the whole picture is one character
    assert character["box"] is None and character["outcome"] in ("named", "unsure", "unknown")
    matches = character["matches"]
    assert matches[0]["character"] == "Leorio Paradinight"
    assert len(matches) == 2 and matches[0]["image"].endswith("03.jpg")
    assert all(0 <= m["score"] <= 1 for m in matches)
    assert lines[1] == {"image": str(junk), "error": "The file is empty (0 bytes)."}
    assert "No such file" in lines[2]["error"]
    assert [line["error"] for line in lines[3:]] == [
        "This is a pipe, not an image file.",
        "This is a device, not an image file.",
        "This is a folder, not an image file.",
    ]

    text = run("whois", str(query), env=env)
    assert text.returncode == 0 and "1. Leorio Paradinight" in text.stdout

    meta_file = tmp_path / "index" / "index.json"  # a fit naming from 0 % saved with the index: whois names at it
    meta = json.loads(meta_file.read_text())
    meta["fitted_threshold"] = {**meta["fitted_threshold"], "threshold": 0.0}
    meta_file.write_text(json.dumps(meta))
    named = run("whois", str(query), "--json", env=env)
    assert json.loads(named.stdout)["characters"][0]["outcome"] == "named"


def test_clear_errors(gallery: Path, env: dict[str, str], tmp_path: Path) -> None:
    no_index = run("whois", str(gallery / "Kurapika" / "00.jpg"), env=env)
    assert no_index.returncode == 2 and "No index" in no_index.stderr and "Traceback" not in no_index.stderr
    for top in ("0", "-3"):
        no_answer = run("whois", str(gallery / "Kurapika" / "00.jpg"), "--top", top, env=env)
        assert no_answer.returncode == 2 and no_answer.stderr.strip() == "error: --top must be at least 1"
    no_gallery = run("index", "--gallery", str(tmp_path / "nowhere"), env=env)
    assert no_gallery.returncode == 2 and "does not exist" in no_gallery.stderr
    bad_setting = run("index", env={**env, "TOP_K": "lots"})
    assert (
        bad_setting.returncode == 2
        and bad_setting.stderr.strip()
        == "error: TOP_K='lots' is not valid: invalid literal for int() with base 10: 'lots'"
    )


def test_progress_is_a_bar_redrawn_once_per_percent_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    for done in range(1, 401):
        cli._progress_bar(done, 400)
    drawn = sys.stderr.getvalue()
    assert drawn.count("\r") == 100 and "\n" not in drawn
    assert drawn.endswith("\rindexing [" + "#" * 30 + "] 400/400")
