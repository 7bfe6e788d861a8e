"""A generated corpus of malformed and hostile files, each with the error the engine must give.

Shared by the engine tests, the bot's end-to-end tests and the soak benchmark.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

from hxhbot import images

SMALL_LIMIT = 200_000  # the byte limit `over_byte_limit` is meant to exceed


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = 30_000) -> bytes:
    """A tiny PNG declaring `side`×`side` pixels of zeros (compresses ~1000:1)."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    body = zlib.compressobj(9)
    data = b"".join(body.compress(row) for _ in range(64)) + body.flush()  # only the first rows: a lie
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def gif_bomb(side: int = 60_000) -> bytes:
    """A GIF whose header declares a huge logical screen."""
    return b"GIF89a" + struct.pack("<HH", side, side) + b"\x00\x00\x00" + b",\x00\x00\x00\x00" + struct.pack(
        "<HH", side, side) + b"\x00\x02\x02\x44\x01\x00;"


def bmp_bomb(side: int = 50_000) -> bytes:
    """A BMP header declaring `side`×`side` 24-bit pixels with no pixel data behind it."""
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\x00" * 16


def _encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (64, 48), **params: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "red" if mode == "RGB" else 1).save(out, fmt, **params)
    return out.getvalue()


def _noisy_jpeg() -> bytes:
    out = io.BytesIO()
    Image.effect_noise((256, 256), 64).convert("RGB").save(out, "JPEG", quality=95)
    return out.getvalue()


def corpus() -> list[tuple[str, bytes, type[images.ImageError]]]:
    """Every hostile file: (name, bytes, the ImageError subclass it must raise)."""
    jpeg, png, webp, gif, bmp = (_noisy_jpeg(), _encoded("PNG"), _encoded("WEBP"), _encoded("GIF"), _encoded("BMP"))
    broken_png = bytearray(png)
    broken_png[-20] ^= 0xFF  # inside IDAT: CRC and data both wrong
    return [
        ("empty.jpg", b"", images.EmptyImageError),
        ("hello.txt", b"hello, world\n", images.NotAnImageError),
        ("page.html", b"<!doctype html><html><body>not an image</body></html>", images.NotAnImageError),
        ("random.bin", bytes(range(256)) * 8, images.NotAnImageError),
        ("svg.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', images.NotAnImageError),
        ("archive.zip", b"PK\x03\x04" + b"\x00" * 60, images.NotAnImageError),
        ("document.pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", images.NotAnImageError),
        ("magic-only.png", b"\x89PNG\r\n\x1a\n", images.TruncatedImageError),
        ("truncated.jpg", jpeg[: len(jpeg) // 2], images.TruncatedImageError),
        ("truncated.png", png[: len(png) - 30], images.TruncatedImageError),
        ("truncated.webp", webp[: len(webp) // 2], images.TruncatedImageError),
        ("truncated.gif", gif[: len(gif) - 12], images.TruncatedImageError),
        ("truncated.bmp", bmp[: len(bmp) // 2], images.TruncatedImageError),
        ("corrupt-idat.png", bytes(broken_png), images.TruncatedImageError),
        ("bomb.png", png_bomb(), images.TooManyPixelsError),
        ("bomb-100mp.png", png_bomb(10_000), images.TooManyPixelsError),
        ("bomb.gif", gif_bomb(), images.TooManyPixelsError),
        ("bomb.bmp", bmp_bomb(), images.TooManyPixelsError),
        ("over-limit.jpg", jpeg + b"\x00" * SMALL_LIMIT, images.ImageTooLargeError),
        ("image.tiff", _encoded("TIFF"), images.UnsupportedFormatError),
        ("icon.ico", _encoded("ICO", size=(32, 32)), images.UnsupportedFormatError),
        ("portable.ppm", _encoded("PPM"), images.UnsupportedFormatError),
        ("targa.tga", _encoded("TGA"), images.UnsupportedFormatError),
    ]
