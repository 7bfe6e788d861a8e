"""Files hxhbot writes survive kill -9 and power loss: the index, the manifest and gallery pictures are flushed to disk
before they are renamed into place, and a save killed half-way leaves nothing behind once the next one has run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from hxhbot.engine.index import META_FILE, GalleryIndex, GalleryItem
from hxhbot.engine.manifest import MANIFEST_NAME, add_to_gallery
from tests.bench.bench_index import clustered
from tests.conftest import COLOURS, character_image, encode

ROOT = Path(__file__).parent.parent
KILLED_SAVE = """
import os, signal, sys
from hxhbot.engine.index import GalleryIndex
index = GalleryIndex.load(sys.argv[1])
os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # killed as it renames the new index.json in
index.save(sys.argv[1])
"""


def _index(rows: int = 60) -> GalleryIndex:
    items = [GalleryItem(f"char{row // 20}", f"g/{row}.jpg", f"{row:064x}") for row in range(rows)]
    return GalleryIndex.build(clustered(rows, 16), items, "fp")


class Disk:
    """Records every fsync (by the path of the file or folder synced) and every rename, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str]] = []
        fsync, replace = os.fsync, os.replace

        def recorded_fsync(fd: int) -> None:
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            fsync(fd)

        def recorded_replace(source: str | Path, target: str | Path) -> None:
            self.events.append(("replace", f"{os.path.abspath(source)} {os.path.abspath(target)}"))
            replace(source, target)

        monkeypatch.setattr(os, "fsync", recorded_fsync)
        monkeypatch.setattr(os, "replace", recorded_replace)

    def check_renames(self) -> list[str]:
        """Assert each rename's file was synced before it and its folder after it; the targets renamed to."""
        targets = []
        for position, (kind, paths) in enumerate(self.events):
            if kind != "replace":
                continue
            source, target = paths.split(" ")
            assert ("fsync", source) in self.events[:position], f"{source} renamed before it was on disk"
            assert ("fsync", os.path.dirname(target)) in self.events[position:], f"{target}'s folder not synced"
            targets.append(target)
        return targets

    def synced_before(self, path: Path, target: Path) -> bool:
        """Whether `path` was synced before anything was renamed to `target`."""
        renamed = next(n for n, (kind, paths) in enumerate(self.events) if paths.endswith(f" {target}"))
        return ("fsync", str(path)) in self.events[:renamed]


def test_an_index_save_syncs_every_file_before_index_json_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = _index()
    disk = Disk(monkeypatch)
    index.save(tmp_path)
    assert disk.check_renames() == [str(tmp_path / META_FILE)]
    stem = index.meta["ann_file"].removesuffix(".ann")
    for name in (f"{stem}.ann", f"{stem}.npy", f"{stem}.directions.npy"):
        assert disk.synced_before(tmp_path / name, tmp_path / META_FILE), name
    assert disk.synced_before(tmp_path, tmp_path / META_FILE)  # their folder entries too


def test_gallery_pictures_and_the_manifest_are_synced_before_renamed_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch)
    picture = encode(character_image(COLOURS["Kurapika"], 3))
    path = add_to_gallery(tmp_path, "Kurapika", picture, "a" * 64, {"url": "https://cdn/k.png"})
    assert disk.check_renames() == [str(path), str(tmp_path / MANIFEST_NAME)]
    assert Image.open(path).size == (96, 96)


def test_an_index_save_killed_half_way_leaves_nothing_once_the_next_one_runs(tmp_path: Path) -> None:
    _index().save(tmp_path)
    before = sorted(path.name for path in tmp_path.iterdir())
    killed = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(tmp_path)], cwd=ROOT, check=False)
    assert killed.returncode == -signal.SIGKILL
    left = sorted(path.name for path in tmp_path.iterdir())
    assert len(left) > len(before) and any(name.endswith(".tmp") for name in left)  # what the killed save wrote
    assert len(GalleryIndex.load(tmp_path)) == 60  # the old index is whole meanwhile

    from hxhbot.engine.index import sweep

    sweep(tmp_path)  # as the next start does, holding the writer lock
    assert sorted(path.name for path in tmp_path.iterdir()) == before
    subprocess.run([sys.executable, "-c", KILLED_SAVE, str(tmp_path)], cwd=ROOT, check=False)
    _index(80).save(tmp_path)  # the next save cleans up as well
    current = GalleryIndex.load(tmp_path)
    stem = current.meta["ann_file"].removesuffix(".ann")
    assert len(current) == 80
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [META_FILE, f"{stem}.ann", f"{stem}.npy", f"{stem}.directions.npy"]
    )
