"""One index writer at a time: a second build (another process, the CLI) is refused and the index kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hxhbot.engine.index import GalleryIndexError
from hxhbot.engine.index_lock import LOCK_FILE, IndexBusyError, index_writer
from hxhbot.engine.indexing import build_gallery_index

ROOT = Path(__file__).parent.parent
HOLD = (
    "import sys\nfrom hxhbot.engine.index_lock import index_writer\nwith index_writer(sys.argv[1]):\n"
    "    print('held', flush=True)\n    sys.stdin.read()\n"
)


def _snapshot(index_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in index_dir.iterdir() if path.name != LOCK_FILE}


def test_the_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    with index_writer(tmp_path / "index"):
        with pytest.raises(IndexBusyError, match=rf"Another index build is running \(pid {os.getpid()}\)"):
            with index_writer(tmp_path / "index"):
                pass
    with index_writer(tmp_path / "index"):  # released on leaving, also after an error inside
        pass


def test_an_index_folder_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        GalleryIndexError, match=r"The index folder .*file cannot be written \(File exists\): set INDEX_DIR"
    ):
        with index_writer(tmp_path / "file"):
            pass


def test_a_second_writer_is_told_and_the_index_kept(gallery: Path, embedder, model_dir: Path, tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    build_gallery_index(gallery, embedder, index_dir)
    before = _snapshot(index_dir)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(index_dir)], cwd=ROOT, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = rf"Another index build is running \(pid {holder.pid}\)"
        with pytest.raises(IndexBusyError, match=busy):
            build_gallery_index(gallery, embedder, index_dir)
        cli = subprocess.run(
            [sys.executable, "-m", "hxhbot", "index", "--gallery", str(gallery)],
            cwd=ROOT,
            env={**os.environ, "MODEL_DIR": str(model_dir), "INDEX_DIR": str(index_dir)},
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert cli.returncode == 2 and "Traceback" not in cli.stderr
        assert f"error: Another index build is running (pid {holder.pid})" in cli.stderr
        assert _snapshot(index_dir) == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    _, summary = build_gallery_index(gallery, embedder, index_dir)  # free again once the holder is gone
    assert summary.images == 16
