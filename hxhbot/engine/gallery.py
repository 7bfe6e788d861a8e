"""The gallery on disk: one folder per character, named as the bot shows it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hxhbot.engine.images import IMAGE_SUFFIXES

MAX_NAME = 100  # characters in a name: Discord's longest menu option (the Wrong menu lists names)


class GalleryError(RuntimeError):
    """A gallery folder that cannot be used at all."""


@dataclass(frozen=True)
class GalleryFile:
    """An image file of the gallery and the character it shows."""

    character: str
    path: Path


def scan_gallery(root: str | Path) -> tuple[list[GalleryFile], list[tuple[Path, str]]]:
    """List the gallery's image files by character, and the files skipped with the reason."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise GalleryError(f"The gallery {root} is a file: it must be a folder, with one folder per character in it.")
    if not root.is_dir():
        raise GalleryError(f"The gallery folder {root} does not exist: make one folder per character in it.")
    files: list[GalleryFile] = []
    skipped: list[tuple[Path, str]] = []
    for folder in sorted(root.iterdir(), key=lambda path: path.name.casefold()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        character = folder.name.strip()
        if not character or len(character) > MAX_NAME:
            skipped.append((folder, f"a character's name must have 1 to {MAX_NAME} characters (the folder's name)"))
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_dir() or path.name.startswith("."):
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(GalleryFile(character, path))
            else:
                skipped.append((path, "not an image file name (expected .jpg, .png, .webp, .avif, .gif or .bmp)"))
    return files, skipped


def picture_key(path: str | Path) -> str:
    """A gallery picture as `character/file`: the same whichever directory a path to it starts from."""
    return "/".join(Path(path).parts[-2:])
