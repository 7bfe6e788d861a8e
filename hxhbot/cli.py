"""The offline command line: build the index from the gallery, rank images against it."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hxhbot.config import ConfigError, Settings, load_settings
from hxhbot.engine.confidence import Calibration
from hxhbot.engine.crops import load_views
from hxhbot.engine.detector import FaceDetector
from hxhbot.engine.fitted_threshold import in_force, stored
from hxhbot.engine.gallery import GalleryError
from hxhbot.engine.gallery_check import checker
from hxhbot.engine.identification import Identification, rank_picture
from hxhbot.engine.images import ImageError, read_image_file
from hxhbot.engine.index import GalleryIndex, GalleryIndexError
from hxhbot.engine.indexing import build_gallery_index
from hxhbot.engine.model_dir import ModelError, trained_pictures
from hxhbot.wording import counted

log = logging.getLogger("hxhbot")


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        return args.run(args, settings)
    except (ConfigError, GalleryError, GalleryIndexError, ModelError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    """The `index` and `whois` sub-commands."""
    parser = argparse.ArgumentParser(prog="python -m hxhbot", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    index = commands.add_parser("index", help="build the index from the gallery")
    index.add_argument("--gallery", type=Path, help="gallery folder (default GALLERY_DIR)")
    index.add_argument("--model", type=Path, help="model folder (default MODEL_DIR)")
    index.add_argument("--out", type=Path, help="index folder (default INDEX_DIR)")
    index.set_defaults(run=_index)
    whois = commands.add_parser("whois", help="rank the characters for images")
    whois.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    whois.add_argument("--top", type=int, help="characters per image (default TOP_K)")
    whois.add_argument("--model", type=Path, help="model folder (default MODEL_DIR)")
    whois.add_argument("--index", type=Path, help="index folder (default INDEX_DIR)")
    whois.add_argument("--json", action="store_true", help="one JSON object per image per line, an entry per character")
    whois.set_defaults(run=_whois)
    return parser


def _index(args: argparse.Namespace, settings: Settings) -> int:
    """Build the index and print a summary."""
    from hxhbot.engine.embedder import Embedder

    model_dir = args.model or settings.model_dir
    embedder = Embedder.load(model_dir, threads=settings.model_threads)
    _, summary = build_gallery_index(
        args.gallery or settings.gallery_dir,
        embedder,
        args.out or settings.index_dir,
        batch_size=settings.batch_size,
        max_pixels=settings.max_image_pixels,
        progress=_progress_bar,
        detector=FaceDetector(),
        check=checker(Calibration.load(model_dir), settings.confidence_threshold, trained_pictures(model_dir)),
    )
    if sys.stderr.isatty():
        print(file=sys.stderr)  # ends the bar's line
    for path, reason in summary.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"indexed {summary.describe()} ({counted(summary.reused, 'embedding')} reused)")
    return 0


def _whois(args: argparse.Namespace, settings: Settings) -> int:
    """Print every character found in each image, ranked, with its outcome."""
    from hxhbot.engine.embedder import Embedder

    top_k = settings.top_k if args.top is None else args.top
    if top_k < 1:
        print("error: --top must be at least 1", file=sys.stderr)
        return 2
    model_dir = args.model or settings.model_dir
    embedder = Embedder.load(model_dir, threads=settings.model_threads)
    calibration = Calibration.load(model_dir)
    index = GalleryIndex.load(args.index or settings.index_dir, embedder.fingerprint)
    threshold = in_force(stored(index.meta), settings.confidence_threshold)  # as the bot answers with this index
    detector = FaceDetector()
    failed = 0
    with ThreadPoolExecutor(1, thread_name_prefix="hxhbot-view") as beside:
        for path in args.images:
            try:
                views = load_views(
                    read_image_file(path, settings.max_image_bytes),
                    embedder.input_size,
                    detector,
                    max_bytes=settings.max_image_bytes,
                    max_pixels=settings.max_image_pixels,
                    max_decode_bytes=settings.decode_memory_bytes,
                    beside=beside,  # one picture at a time: its whole view on the other core
                )
            except (OSError, ImageError) as error:
                failed += 1
                reason = str(error) if isinstance(error, ImageError) else f"cannot read the file ({error.strerror})"
                _emit(args.json, {"image": str(path), "error": reason})
                continue
            result = rank_picture(
                index.similarities(embedder.embed(views.arrays, alone=True)), views.boxes, calibration, top_k
            )
            _emit(
                args.json,
                {"image": str(path), "characters": _characters(result, threshold, settings.unknown_threshold)},
            )
    return 1 if failed else 0


def _characters(result: Identification, threshold: float, unknown: float) -> list[dict]:
    """One entry per character found, the most confident first: its box (shares of the picture; null: the whole
    picture), outcome (named from `threshold`, unknown below `unknown`) and matches."""
    sightings = sorted(result.sightings, key=lambda sighting: -sighting.best.score)
    return [
        {
            "box": [round(value, 4) for value in (s.box.left, s.box.top, s.box.right, s.box.bottom)] if s.box else None,
            "outcome": s.outcome(threshold, unknown).value,
            "matches": [{"character": m.character, "score": round(m.score, 4), "image": m.image} for m in s.matches],
        }
        for s in sightings
    ]


def _emit(as_json: bool, result: dict) -> None:
    """Print one image's result as a JSON line or as text."""
    if as_json:
        print(json.dumps(result, ensure_ascii=False), flush=True)
    elif "error" in result:
        print(f"{result['image']}: {result['error']}")
    else:
        print(f"{result['image']}:")
        for number, character in enumerate(result["characters"], 1):
            where = "box " + ", ".join(f"{v:.2f}" for v in character["box"]) if character["box"] else "whole picture"
            print(f"  character {number} ({where}): {character['outcome']}")
            for rank, match in enumerate(character["matches"], 1):
                print(f"    {rank}. {match['character']:<30} {match['score']:6.1%}  ({match['image']})")


def _progress_bar(done: int, total: int) -> None:
    """Draw a one-line progress bar on a terminal's stderr; elsewhere (a log, a pipe) write a line per tenth."""
    width, parts = 30, max(total, 1)
    if not sys.stderr.isatty():
        if done == total or done * 10 // parts != (done - 1) * 10 // parts:
            print(f"indexing {done}/{total}", file=sys.stderr, flush=True)
        return
    if done != total and done * 100 // parts == (done - 1) * 100 // parts:
        return  # redraw once per percent
    filled = width * done // parts
    print(f"\rindexing [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)
