"""A small JPEG of a picture with a numbered box around each character found, for the answer's thumbnail."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

from hxhbot.engine.detector import Box

PREVIEW_SIDE = 320  # pixels on the longer side
COLOURS = ("#ffd400", "#00e5ff", "#ff4fd8")  # one per box, bright on drawn and photographed pictures alike


def numbered_preview(picture: Image.Image, boxes: list[Box], side: int = PREVIEW_SIDE) -> bytes:
    """The picture shrunk to `side`, box i outlined and numbered i + 1, as JPEG bytes."""
    small = picture.convert("RGB")
    small.thumbnail((side, side), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(small)
    width = max(2, round(max(small.size) / 110))
    font = ImageFont.load_default(size=max(14, max(small.size) // 14))
    for number, box in enumerate(boxes, 1):
        colour = COLOURS[(number - 1) % len(COLOURS)]
        left, top, right, bottom = box.pixels(*small.size)
        draw.rectangle([left, top, right - 1, bottom - 1], outline=colour, width=width)
        label = str(number)
        x0, y0, x1, y1 = draw.textbbox((left + width, top + width), label, font=font)
        draw.rectangle([x0 - 3, y0 - 3, x1 + 3, y1 + 3], fill=colour)
        draw.text((left + width, top + width), label, fill="black", font=font)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=85)
    return out.getvalue()
