"""A generated corpus of malformed and hostile files, each with the error the engine must give.

Shared by the engine tests, the bot's end-to-end tests and the soak benchmark.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image

from hxhbot.engine import images

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
    return (
        b"GIF89a"
        + struct.pack("<HH", side, side)
        + b"\x00\x00\x00"
        + b",\x00\x00\x00\x00"
        + struct.pack("<HH", side, side)
        + b"\x00\x02\x02\x44\x01\x00;"
    )


def bmp_bomb(side: int = 50_000) -> bytes:
    """A BMP header declaring `side`×`side` 24-bit pixels with no pixel data behind it."""
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\x00" * 16


def png_of(width: int, height: int, colour_type: int = 2) -> bytes:
    """A complete, valid 8-bit PNG of `width`×`height` black pixels (RGB by default), compressed as it streams."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    row = b"\x00" * (1 + width * channels)
    body = zlib.compressobj(9)
    rows_per_step = max(1, (1 << 20) // len(row))
    parts = [body.compress(row * min(rows_per_step, height - top)) for top in range(0, height, rows_per_step)]
    chunks = [_png_chunk(b"IHDR", header)]
    if colour_type == 3:
        chunks.append(_png_chunk(b"PLTE", bytes(range(256)) * 3))
    chunks += [_png_chunk(b"IDAT", b"".join(parts) + body.flush()), _png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def png_text_bomb(megabytes: int = 50) -> bytes:
    """A small PNG whose zTXt chunk inflates to `megabytes` MB (Pillow reads at most MAX_TEXT_CHUNK)."""
    png = _encoded("PNG")
    text = zlib.compress(b"A" * (megabytes << 20), 9)
    return png[:33] + _png_chunk(b"zTXt", b"Comment\x00\x00" + text) + png[33:]  # right after IHDR


def many_scans_jpeg(scans: int = 2000) -> bytes:
    """A progressive JPEG whose first scan repeats `scans` times (each repeat re-reads the whole picture)."""
    out = io.BytesIO()
    Image.effect_noise((64, 64), 64).convert("RGB").save(out, "JPEG", progressive=True, quality=90)
    data = out.getvalue()
    start = data.index(b"\xff\xda")
    end = data.index(b"\xff\xc4", start)  # the next Huffman table: the first scan ends there
    return data[:end] + data[start:end] * (scans - 1) + data[end:]


def as_mpo(jpeg: bytes) -> bytes:
    """The JPEG disguised as MPO (a multi-picture file): Pillow's 106-byte MPF segment of a 2-frame MPO after SOI."""
    out = io.BytesIO()
    frame = Image.new("RGB", (8, 8))
    frame.save(out, "MPO", save_all=True, append_images=[frame])
    mpo = out.getvalue()
    start = mpo.index(b"\xff\xe2")  # APP2, carrying "MPF\0"
    end = start + 2 + struct.unpack(">H", mpo[start + 2 : start + 4])[0]
    return jpeg[:2] + mpo[start:end] + jpeg[2:]


def huge_metadata_jpeg(icc_megabytes: int = 4) -> bytes:
    """A small JPEG carrying an `icc_megabytes` MB ICC profile (in 64 KB APP2 segments) and a full EXIF block."""
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: the EXIF segment near its 64 KB limit
    exif[0x0112] = 1
    out = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(out, "JPEG", icc_profile=bytes(icc_megabytes << 20), exif=exif.tobytes())
    return out.getvalue()


def long_gif(frames: int = 1000, side: int = 128) -> bytes:
    """An animated GIF of `frames` frames, each a different colour."""
    pictures = [Image.new("P", (side, side), number % 256) for number in range(frames)]
    for picture in pictures:
        picture.putpalette(bytes(range(256)) * 3)
    out = io.BytesIO()
    pictures[0].save(out, "GIF", save_all=True, append_images=pictures[1:], duration=20, optimize=False)
    return out.getvalue()


def big_jpeg(width: int, height: int, progressive: bool = False) -> bytes:
    """A JPEG of `width`×`height` pixels (a grey gradient), baseline or progressive."""
    gradient = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    out = io.BytesIO()
    gradient.save(out, "JPEG", quality=80, progressive=progressive)
    return out.getvalue()


def big_webp(width: int, height: int, alpha: bool = False) -> bytes:
    """A `width`×`height` lossy WebP: a grey gradient under a little noise, like a photo; with `alpha`, see-through."""
    noise = Image.effect_noise((width // 4, height // 4), 60).resize((width, height), Image.Resampling.NEAREST)
    picture = Image.blend(Image.linear_gradient("L").resize((width, height)), noise, 0.2)
    picture = picture.convert("RGBA" if alpha else "RGB")
    if alpha:
        picture.putalpha(Image.linear_gradient("L").resize((width, height)))
    out = io.BytesIO()
    picture.save(out, "WEBP", quality=50, method=0)
    return out.getvalue()


def flat(fmt: str, width: int, height: int) -> bytes:
    """A `width`×`height` picture of one colour in `fmt` (a few hundred bytes: WebP lossless, AVIF)."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 60, 90)).save(out, fmt, lossless=True, quality=10, speed=10, method=0)
    return out.getvalue()


def screenshot_png(width: int, height: int, noisy_rows: int) -> bytes:
    """A `width`×`height` RGB PNG whose first `noisy_rows` rows are noise (incompressible) and the rest flat."""
    pixels = np.full((height, width, 3), 40, np.uint8)
    pixels[:noisy_rows] = np.random.default_rng(0).integers(0, 256, (noisy_rows, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", compress_level=1)
    return out.getvalue()


def stereo_mpo(width: int, height: int) -> bytes:
    """A camera's two-frame MPO (baseline JPEG frames, left and right), `width`×`height` each."""
    left = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    out = io.BytesIO()
    left.save(out, "MPO", save_all=True, append_images=[left.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    return out.getvalue()


def big_avif(side: int, noise: bool = False) -> bytes:
    """A `side`×`side` 8-bit AVIF: a grey gradient, or noise in full colour resolution (4:4:4, dearest to decode)."""
    picture = Image.effect_noise((side, side), 40) if noise else Image.linear_gradient("L").resize((side, side))
    out = io.BytesIO()
    picture.convert("RGB").save(out, "AVIF", quality=30, speed=10, subsampling="4:4:4" if noise else "4:2:0")
    return out.getvalue()


def _encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (64, 48), **params: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "red" if mode == "RGB" else 1).save(out, fmt, **params)
    return out.getvalue()


def _noisy_jpeg() -> bytes:
    out = io.BytesIO()
    Image.effect_noise((256, 256), 64).convert("RGB").save(out, "JPEG", quality=95)
    return out.getvalue()


@functools.cache
def corpus() -> list[tuple[str, bytes, type[images.ImageError]]]:
    """Every hostile file: (name, bytes, the ImageError subclass it must raise); each under `SMALL_LIMIT` bytes."""
    jpeg, png, webp, gif, bmp = (_noisy_jpeg(), _encoded("PNG"), _encoded("WEBP"), _encoded("GIF"), _encoded("BMP"))
    avif = big_avif(64, noise=True)
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
        ("truncated.avif", avif[: len(avif) // 2], images.TruncatedImageError),
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
        ("wide-8000x200.png", png_of(8000, 200), images.AspectRatioError),
        ("wide-30000x600.png", png_of(30_000, 600), images.AspectRatioError),
        ("wide-40000x1000.png", png_of(40_000, 1000), images.AspectRatioError),
        ("tall-1x40000.png", png_of(1, 40_000), images.AspectRatioError),
        ("flat-6000x6000.webp", flat("WEBP", 6000, 6000), images.TooManyPixelsError),  # 36 MP: 288 MB to decode
        ("flat-5000x4000.avif", flat("AVIF", 5000, 4000), images.TooManyPixelsError),  # 20 MP: 320 MB to decode
        ("text-bomb.png", png_text_bomb(), images.TruncatedImageError),
        ("many-scans.jpg", many_scans_jpeg(), images.TooManyScansError),
        ("many-scans.mpo", as_mpo(many_scans_jpeg()), images.TooManyScansError),
        ("truncated.mpo", as_mpo(jpeg)[: len(jpeg) // 2], images.TruncatedImageError),
    ]


@functools.cache
def heavy() -> list[tuple[str, bytes]]:
    """Files the loader must accept that cost the most memory or time to decode: (name, bytes)."""
    return [
        ("frames-1000.gif", long_gif()),
        ("icc-4mb-exif-64kb.jpg", huge_metadata_jpeg()),
        ("baseline-7000x5000.jpg", big_jpeg(7000, 5000)),
        ("progressive-3000x3000.jpg", big_jpeg(3000, 3000, progressive=True)),
        ("rgb-3200x3200.png", png_of(3200, 3200)),
        ("rgba-2000x2000.png", png_of(2000, 2000, colour_type=6)),
        ("grey-6000x6000.png", png_of(6000, 6000, colour_type=0)),
        ("palette-6000x6000.png", png_of(6000, 6000, colour_type=3)),
        ("wide-20to1-12000x600.png", png_of(12_000, 600)),
        ("rgb-1700x1700.webp", big_webp(1700, 1700)),
        ("noise-444-1700x1700.avif", big_avif(1700, noise=True)),
        ("rgb-2000x2000.avif", big_avif(2000)),
        ("photo-2048x1536.webp", big_webp(2048, 1536)),
        ("rgba-2400x2400.webp", big_webp(2400, 2400, alpha=True)),
        ("phone-12mp-4000x3000.webp", big_webp(4000, 3000)),
        ("rgb-6000x5000.png", png_of(6000, 5000)),
        ("screenshot-4k-3840x2160.png", screenshot_png(3840, 2160, 860)),  # 9.5 MB: over the old 8 MB limit
        ("stereo-2x-3000x2000.mpo", stereo_mpo(3000, 2000)),
        ("rgb-1800x1800.bmp", _encoded("BMP", size=(1800, 1800))),  # 9.7 MB: uncompressed, near the byte limit
        ("progressive-6000x6000.mpo", as_mpo(big_jpeg(6000, 6000, progressive=True))),
    ]


def in_flight(count: int = 32) -> list[tuple[str, bytes, str]]:
    """`count` pictures to send at once: every heavy file, then the hostile ones that pass the header's first look;
    (name, bytes, 'answered' or the ImageError class name it must give)."""
    unread = (images.EmptyImageError, images.NotAnImageError, images.UnsupportedFormatError, images.ImageTooLargeError)
    files = [(name, data, "answered") for name, data in heavy()]
    files += [(name, data, kind.__name__) for name, data, kind in corpus() if not issubclass(kind, unread)]
    return files[:count]
