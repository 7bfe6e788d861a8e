"""Bytes in, a checked, decoded, square RGB array out: the one image path for training and serving."""

from __future__ import annotations

import io
import os
import stat
import warnings
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np
from PIL import AvifImagePlugin, Image, JpegImagePlugin, UnidentifiedImageError

from hxhbot.engine.memory_budget import MemoryBudget
from hxhbot.errors import UserError

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "GIF", "BMP")
READABLE = "JPEG, PNG, WebP, AVIF, GIF or BMP"  # the formats above, as members read them
SPELLED = {"WEBP": "WebP"}  # a format's name as members read it, where it is not Pillow's
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".avif", ".gif", ".bmp"})  # names we treat as images
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # Discord's upload limit for everyone
DEFAULT_MAX_PIXELS = 40_000_000
TRUSTED_MAX_BYTES = 256 * 1024 * 1024  # one file of the owner's gallery or of a data set
DEFAULT_MAX_DECODE_BYTES = 256 * 1024 * 1024  # pixel memory one member's picture may take: all the bot's budget
TRUSTED_DECODE_BYTES = 512 * 1024 * 1024  # the owner's gallery and data sets: 4K pictures a stranger may not send
MAX_ASPECT_RATIO = 20  # longer side / shorter side: beyond, the picture is a sliver once letterboxed
MAX_JPEG_SCANS = 100  # a progressive JPEG re-reads its whole picture per scan: ~10 scans is usual
BAND_BYTES = 4 * 1024 * 1024  # pixels converted to RGB at a time while shrinking
SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"RIFF")
AVIF_BRANDS = (b"ftypavif", b"ftypavis")  # an AVIF file's first box, after its 4-byte length
BACKGROUND = (128, 128, 128)  # neutral grey behind transparency and around letterboxed images
PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}  # Pillow's; others 4
AvifImagePlugin.DEFAULT_MAX_THREADS = 1  # libavif's decoding memory, bounded below, grows with its threads
ORIENTATION = 0x0112  # the EXIF tag saying how to turn the picture upright
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(UserError, ValueError):
    """An image that cannot be used."""

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


class NotAFileError(ImageError):
    """A path that names a folder, a device or a pipe, not a file."""

    reason = "not_a_file"


class AspectRatioError(ImageError):
    """A picture far longer than wide (or the reverse) to be of any use."""

    reason = "aspect_ratio"


class TooManyScansError(ImageError):
    """A progressive JPEG with so many scans that decoding it would take far too long."""

    reason = "too_many_scans"


class TruncatedImageError(ImageError):
    """A recognised image whose data is cut short or corrupt."""

    reason = "truncated"


def decode_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int = 0,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    budget: MemoryBudget | None = None,
) -> Image.Image:
    """Decode image bytes into an upright RGB picture, or raise an `ImageError`.

    With `draft_size`, the picture comes shrunk (by a whole factor) to a longer side of at least `draft_size`.

    Memory stays within `max_decode_bytes`: JPEGs decode at a reduced scale, other formats are shrunk
    band by band right after decoding, and pictures that would need more are refused before decoding.
    With a `budget` shared by the pictures in flight, the decoding first waits for its bytes there
    (`BusyError` when that would take longer than the budget's wait).
    """
    if not data:
        raise EmptyImageError("The file is empty (0 bytes).")
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    image = _open(data)
    width, height = image.size
    if width < 1 or height < 1:
        raise TruncatedImageError("The image has no pixels.")
    if width * height > max_pixels:
        raise TooManyPixelsError(
            f"The image is {width}×{height} pixels; the limit is {max_pixels / 1e6:.0f} megapixels."
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise AspectRatioError(
            f"The image is {width}×{height} pixels; send one at most {MAX_ASPECT_RATIO} times longer than wide."
        )
    kind = _kind(image)
    if kind == "JPEG" and data.count(b"\xff\xda") > MAX_JPEG_SCANS:  # start-of-scan markers
        raise TooManyScansError(
            f"The JPEG has more than {MAX_JPEG_SCANS} progressive scans; save it again as an ordinary JPEG."
        )
    try:
        image.seek(0)  # first frame of an animation
        if draft_size:  # JPEG: decode at a reduced scale, much faster
            longer = max(width, height)
            image.draft("RGB", (-(-draft_size * width // longer), -(-draft_size * height // longer)))
    except Exception as error:  # every decoder failure past the header means damaged data
        raise TruncatedImageError("The image is damaged or cut short and cannot be read.") from error
    factor = max(1, max(image.size) // draft_size) if draft_size else 1
    cost = _decoding_bytes(image, width, height, factor)
    limit = min(max_decode_bytes, budget.total) if budget else max_decode_bytes
    if cost > limit:
        most = limit / (cost / (width * height)) / 1e6
        other = "" if kind == "JPEG" else " or a JPEG"
        raise TooManyPixelsError(
            f"The image is {width}×{height} pixels, too many for the bot to read as {SPELLED.get(kind, kind)}: "
            f"send one of at most {most:.0f} megapixels{other}."
        )
    with budget.reserve(cost) if budget else nullcontext():
        try:
            orientation = image.getexif().get(ORIENTATION, 1)
            if kind == "WEBP":
                image = _webp_to_rgb(data, factor)
            else:
                image.load()
                image = _shrink_to_rgb(image, factor)
        except Exception as error:  # every decoder failure past the header means damaged data
            raise TruncatedImageError("The image is damaged or cut short and cannot be read.") from error
        return image.transpose(TRANSPOSE[orientation]) if orientation in TRANSPOSE else image


def load_image(
    data: bytes,
    size: int,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> np.ndarray:
    """Decode image bytes into a `(size, size, 3)` float32 array of 0–255 RGB values."""
    picture = decode_image(
        data, max_bytes=max_bytes, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes, draft_size=2 * size
    )
    return to_array(picture, size)


def read_image_file(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """A file's bytes, never more than `max_bytes`; a folder, device or pipe is refused without waiting on it."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a pipe with no writer opens at once instead of hanging
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a pipe" if stat.S_ISFIFO(info.st_mode) else "a device"
            raise NotAFileError(f"This is {kind}, not an image file.")
        if info.st_size > max_bytes:
            raise _too_large(info.st_size, max_bytes)
        with open(descriptor, "rb", closefd=False) as file:
            data = file.read(max_bytes + 1)
    finally:
        os.close(descriptor)
    if len(data) > max_bytes:  # it grew while being read
        raise _too_large(len(data), max_bytes)
    return data


def load_image_file(path: str | Path, size: int, max_bytes: int = DEFAULT_MAX_BYTES, **limits: int) -> np.ndarray:
    """Read and decode an image file like `load_image`."""
    return load_image(read_image_file(path, max_bytes), size, max_bytes=max_bytes, **limits)


def to_array(image: Image.Image, size: int) -> np.ndarray:
    """Shrink an RGB picture to fit `size`×`size`, then letterbox it onto a neutral square."""
    scale = size / max(image.size)
    fitted = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if fitted != image.size:
        image = image.resize(fitted, Image.Resampling.BILINEAR, reducing_gap=3.0)
    square = Image.new("RGB", (size, size), BACKGROUND)
    square.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
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
        if data.startswith(SIGNATURES) or data[4:12] in AVIF_BRANDS:
            raise TruncatedImageError("The image is damaged or cut short and cannot be read.") from error
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            other = Image.open(io.BytesIO(data))
    except Exception:  # any decoder failure means: not an image we can recognise
        raise NotAnImageError("This file is not an image.") from None
    raise UnsupportedFormatError(f"{other.format or 'This'} images are not supported; send {READABLE}.")


def _kind(image: Image.Image) -> str:
    """The format `image` is checked as: an MPO (Pillow's name for a JPEG with a multi-picture header) is a JPEG."""
    return "JPEG" if isinstance(image, JpegImagePlugin.JpegImageFile) else (image.format or "")


def _decoding_bytes(image: Image.Image, width: int, height: int, factor: int) -> int:
    """Bytes of pixels decoding `image` (drafted, not loaded) and shrinking it by `factor` take at most."""
    decoded = image.width * image.height * PIXEL_BYTES.get(image.mode, 4)
    kind = _kind(image)
    if kind == "WEBP":
        decoded *= 2  # OpenCV's array and its colour conversion (measured: up to ~11 B/pixel with the shrunk copy)
    if kind == "AVIF":
        decoded *= 4  # libavif's YUV planes and RGBA frame, Pillow's copy (measured: up to 11 B/pixel, 8-bit 4:4:4)
    if kind == "JPEG" and image.info.get("progressive"):  # all DCT coefficients, at full scale
        layers = getattr(image, "layer", None) or [("", 1, 1, 0)] * len(image.getbands())
        most = max(h * v for _, h, v, _ in layers)
        decoded += width * height * 2 * sum(h * v for _, h, v, _ in layers) // most
    shrunk = -(-image.width // factor) * -(-image.height // factor) * 4
    metadata = sum(len(value) for value in image.info.values() if isinstance(value, bytes))  # ICC profile, EXIF
    return decoded + shrunk + min(BAND_BYTES, image.width * factor * 8) + metadata


def _webp_to_rgb(data: bytes, factor: int) -> Image.Image:
    """A WebP's first frame decoded by OpenCV's libwebp into one array and shrunk by `factor` there, then made RGB
    (Pillow's own WebP path holds four full-size copies, ~16 B/pixel, and takes about twice as long)."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if pixels is None:
        raise ValueError("OpenCV could not decode the WebP")
    if factor > 1:
        height, width = pixels.shape[:2]
        pixels = cv2.resize(pixels, (-(-width // factor), -(-height // factor)), interpolation=cv2.INTER_AREA)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA if pixels.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return _to_rgb(Image.fromarray(pixels))


def _shrink_to_rgb(image: Image.Image, factor: int) -> Image.Image:
    """Convert a loaded picture to RGB and shrink it by `factor`, a band of rows at a time."""
    high = image.getextrema()[1] if image.mode.startswith("I") else 0
    white = 65535.0 if isinstance(high, int | float) and high > 255 else 255.0
    if factor == 1 and image.width * image.height * 4 <= BAND_BYTES:
        return _to_rgb(image, white)
    rows = max(factor, BAND_BYTES // (4 * image.width) // factor * factor)
    out = Image.new("RGB", (-(-image.width // factor), -(-image.height // factor)))
    for top in range(0, image.height, rows):
        band = _to_rgb(image.crop((0, top, image.width, min(image.height, top + rows))), white)
        out.paste(band.reduce(factor) if factor > 1 else band, (0, top // factor))
    return out


def _to_rgb(image: Image.Image, white: float = 255.0) -> Image.Image:
    """Convert any mode (palette, alpha, greyscale, CMYK, 16-bit with `white` its top) to RGB on neutral grey."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        pixels = np.asarray(image, dtype=np.float32)
        image = Image.fromarray(np.clip(pixels / white * 255.0, 0, 255).astype(np.uint8))
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
        return _to_rgb(image.convert("RGBA"), white)
    return image.convert("RGB")


def _too_large(size: int, max_bytes: int) -> ImageTooLargeError:
    """The error for a file of `size` bytes over the limit."""
    return ImageTooLargeError(f"The file is {_megabytes(size)}; the limit is {_megabytes(max_bytes)}.")


def _megabytes(size: int) -> str:
    """Format a byte count for people."""
    return f"{size / (1024 * 1024):.1f} MB"
