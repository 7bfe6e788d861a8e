"""Bytes in, a checked, decoded, square RGB array out: the one image path for training and serving."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"})  # file names we treat as images
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"RIFF")
BACKGROUND = (128, 128, 128)  # neutral grey behind transparency and around letterboxed images


class ImageError(ValueError):
    """An image that cannot be used; `str()` is a sentence fit to show a user."""

    reason = "invalid"


class EmptyImageError(ImageError):
    """Zero bytes."""

    reason = "empty"


class ImageTooLargeError(ImageError):
    """More bytes than the limit."""

    reason = "too_large"


class NotAnImageError(ImageError):
    """Bytes that no image decoder recognises."""

    reason = "not_an_image"


class UnsupportedFormatError(ImageError):
    """A real image in a format we do not accept."""

    reason = "unsupported_format"


class TooManyPixelsError(ImageError):
    """More pixels than the limit (decompression bombs)."""

    reason = "too_many_pixels"


class TruncatedImageError(ImageError):
    """A recognised image whose data is cut short or corrupt."""

    reason = "truncated"


def decode_image(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int = 0
) -> Image.Image:
    """Decode image bytes into an upright RGB picture (at least `draft_size` a side), or raise an `ImageError`."""
    if not data:
        raise EmptyImageError("The file is empty (0 bytes).")
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"The file is {_megabytes(len(data))}; the limit is {_megabytes(max_bytes)}."
        )
    image = _open(data)
    width, height = image.size
    if width < 1 or height < 1:
        raise TruncatedImageError("The image has no pixels.")
    if width * height > max_pixels:
        raise TooManyPixelsError(
            f"The image is {width}×{height} pixels; the limit is {max_pixels / 1e6:.0f} megapixels."
        )
    try:
        image.seek(0)  # first frame of an animation
        if draft_size:
            image.draft("RGB", (draft_size, draft_size))  # JPEG: decode at a reduced scale, much faster
        image.load()
        image = ImageOps.exif_transpose(image)
    except Exception as error:  # every decoder failure past the header means damaged data
        raise TruncatedImageError("The image is damaged or cut short and cannot be read.") from error
    return _to_rgb(image)


def load_image(
    data: bytes,
    size: int,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode image bytes into a `(size, size, 3)` float32 array of 0–255 RGB values."""
    return to_array(decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels, draft_size=2 * size), size)


def load_image_file(path: str | Path, size: int, **limits: int) -> np.ndarray:
    """Read and decode an image file like `load_image`."""
    return load_image(Path(path).read_bytes(), size, **limits)


def thumbnail_jpeg(path: str | Path, side: int = 256) -> bytes:
    """A JPEG thumbnail of a gallery image, at most `side` pixels on its longer edge."""
    image = decode_image(Path(path).read_bytes(), max_bytes=1 << 30)
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88)
    return out.getvalue()


def to_array(image: Image.Image, size: int) -> np.ndarray:
    """Letterbox an RGB picture onto a neutral square and resize it to `size`×`size`."""
    side = max(image.size)
    square = Image.new("RGB", (side, side), BACKGROUND)
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    square = square.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(square, dtype=np.float32)


def _open(data: bytes) -> Image.Image:
    """Open lazily (header only), telling unsupported formats from non-images."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as error:
        raise TooManyPixelsError("The image has far too many pixels to open safely.") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        if data.startswith(SIGNATURES):
            raise TruncatedImageError("The image is damaged or cut short and cannot be read.") from error
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            other = Image.open(io.BytesIO(data))
    except Exception:  # any decoder failure means: not an image we can recognise
        raise NotAnImageError("This file is not an image.") from None
    raise UnsupportedFormatError(
        f"{other.format or 'This'} images are not supported; send JPEG, PNG, WebP, GIF or BMP."
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode (palette, alpha, greyscale, CMYK, 16-bit) to RGB on a neutral background."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if pixels.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(pixels / top * 255.0, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        pixels = np.nan_to_num(np.asarray(image, dtype=np.float64))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "La", "PA"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa"):
        background = Image.new("RGBA", image.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    if image.mode == "L" and "transparency" in image.info:
        return _to_rgb(image.convert("RGBA"))
    return image.convert("RGB")


def _megabytes(size: int) -> str:
    """Format a byte count for people."""
    return f"{size / (1024 * 1024):.1f} MB"
