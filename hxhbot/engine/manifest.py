"""The gallery's manifest.json (where each picture came from) and saving a picture into the gallery."""

from __future__ import annotations

import io
import json
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image

from hxhbot.engine.durable import write_durably
from hxhbot.engine.images import decode_image

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
JPEG_QUALITY = 95
MAX_FOLDER_BYTES = 100
UNNAMED = "Unnamed character"
WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{port}{n}" for port in ("COM", "LPT") for n in range(1, 10)}
)


class ManifestError(RuntimeError):
    """A manifest that cannot be read; `str()` is one line for the user."""


def safe_folder_name(name: str) -> str:
    """A character name as a folder name that is safe on every OS and still reads as the name."""
    text = unicodedata.normalize("NFC", name)
    text = "".join(" " if char.isspace() else "" if unicodedata.category(char)[0] == "C" else char for char in text)
    text = re.sub(r'[<>:"/\\|?*]', " ", text)
    text = " ".join(text.split()).strip(". ")
    encoded = text.encode("utf-8")
    if len(encoded) > MAX_FOLDER_BYTES:
        text = encoded[:MAX_FOLDER_BYTES].decode("utf-8", "ignore").rstrip(". ")
    if not text:
        return UNNAMED
    if text.split(".")[0].upper() in WINDOWS_RESERVED:
        return f"{text} (character)"
    return text


class Manifest:
    """What earlier runs did and where each image came from, in <gallery>/manifest.json."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self._data = data
        self._counts = Counter(entry["character"] for entry in data["images"].values())

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read the manifest, or start an empty one."""
        empty: dict[str, Any] = {"version": MANIFEST_VERSION, "images": {}, "urls": {}, "characters": {}}
        if not path.exists():
            return cls(path, empty)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise ManifestError(f"{path} is not valid JSON ({error}); repair or delete it.") from None
        unusable = ManifestError(f"{path} is not a version {MANIFEST_VERSION} gallery manifest; move it away.")
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            raise unusable
        try:
            return cls(path, {**empty, **data})
        except (AttributeError, KeyError, TypeError):
            raise unusable from None

    def save(self) -> None:
        """Write the manifest atomically and durably (a crash leaves the old or the new one, never half)."""
        write_durably(self.path, json.dumps(self._data, indent=1, ensure_ascii=False).encode("utf-8"))

    def url(self, url: str) -> dict[str, Any] | None:
        """What happened to `url` before, if anything."""
        return self._data["urls"].get(url)

    def image(self, sha256: str) -> dict[str, Any] | None:
        """The saved image with these bytes, if any."""
        return self._data["images"].get(sha256)

    def count(self, folder: str) -> int:
        """How many images are recorded for a character folder."""
        return self._counts[folder]

    def add_image(self, sha256: str, entry: dict[str, str]) -> None:
        """Record a saved image and its URL."""
        self._data["images"][sha256] = entry
        self._counts[entry["character"]] += 1
        self.mark_url(entry["url"], "saved", sha256=sha256)

    def mark_url(self, url: str, status: str, **details: str) -> None:
        """Record that `url` was downloaded and what came of it."""
        self._data["urls"][url] = {"status": status, **details}

    def is_done(self, source: str, folder: str, per_character: int) -> bool:
        """Whether a run for at least `per_character` images finished this character."""
        return self._data["characters"].get(source, {}).get(folder, 0) >= per_character

    def mark_done(self, source: str, folder: str, per_character: int) -> None:
        """Record that this character is finished for `per_character` images."""
        self._data["characters"].setdefault(source, {})[folder] = per_character


def gallery_path(gallery: Path, folder: str, sha256: str) -> Path:
    """Where a picture with this checksum of its downloaded bytes is saved in a character's folder."""
    return gallery / folder / f"{sha256[:16]}.jpg"


def write_jpeg(image: Image.Image, path: Path) -> None:
    """Save an RGB picture as a JPEG, atomically and durably."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(path, buffer.getvalue())


def add_to_gallery(gallery: Path, character: str, data: bytes, sha256: str, source: dict[str, str]) -> Path:
    """Save checked picture bytes as the character's JPEG and record it, with `source`, in the manifest."""
    manifest = Manifest.load(gallery / MANIFEST_NAME)
    path = gallery_path(gallery, character, sha256)
    if not path.exists():
        write_jpeg(decode_image(data, max_bytes=max(len(data), 1)), path)
    manifest.add_image(sha256, {"file": f"{character}/{path.name}", "character": character, "sha256": sha256, **source})
    manifest.save()
    return path
