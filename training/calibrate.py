"""Fit the bot's confidence on one set of pictures, confirm it on another, and save it beside the model.

python -m training.calibrate --model DIR [--fit-model DIR] --fit DIR [DIR ...] --negatives DIR --check DIR [DIR ...]
                             [--draws 5] [--sizes 1 5 -1 0] [--cache DIR] [--table FILE]

Protocol: every gallery is drawn from one set's characters (`--sizes`: 1, 5 characters, all but one,
all), 8 pictures each (source-grouped, seeded; `--draws` seeds); queries are the gallery characters'
other pictures, every picture of the set's characters left out of the gallery, and half of the
negatives (the other half for the check); never a picture the answering model trained on (its
split.json says), so that a model's own characters are asked about new pictures of them. Each query
is answered as the bot answers it (each character found, `hxhbot.engine.confidence.subject_views`); a
picture counts as named confidently when any of its answers reaches the threshold, and as right when
its most confident answer is its character. The logistic model is fitted on the `--fit` set only
(the three groups weighted equally at every gallery size), on the answers of `--fit-model` for
characters it never trained on (members ask about characters the model never saw); the `--check`
set only confirms it, with `--model`. Writes `calibration.json` into the model directory and prints
the table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from hxhbot.config import load_settings  # noqa: E402
from hxhbot.engine.confidence import FEATURES, Calibration, subject_views  # noqa: E402
from hxhbot.engine.detector import FaceDetector  # noqa: E402
from hxhbot.engine.embedder import Embedder  # noqa: E402
from hxhbot.engine.fitted_threshold import in_force  # noqa: E402
from hxhbot.engine.gallery import picture_key, scan_gallery  # noqa: E402
from hxhbot.engine.images import IMAGE_SUFFIXES  # noqa: E402
from hxhbot.engine.index import Comparison, character_similarities  # noqa: E402
from hxhbot.engine.model_dir import CONFIG_FILE, trained_pictures  # noqa: E402
from training.data import Split, make_split  # noqa: E402
from training.evaluate import embed_pictures  # noqa: E402
from training.metrics import bot_answers  # noqa: E402

GROUPS = ("known", "missing", "negative")
GALLERY_SIZE = 8
ROTATIONS = 10  # galleries per draw and size at most
RIDGE = 1e-3


@dataclass
class Pictures:
    """Embedded pictures: every view's unit vector, the picture each belongs to, and each picture's label."""

    paths: list[str]
    labels: list[str | None]  # None: a negative, no character at all
    vectors: np.ndarray
    owner: np.ndarray

    def views(self, picture: int) -> np.ndarray:
        """Rows of `vectors` that are this picture's views (whole frame first)."""
        return np.flatnonzero(self.owner == picture)


@dataclass
class Answers:
    """Every query's answers for one gallery: per character found, its views × characters similarities."""

    size: int
    draw: int
    groups: list[str]  # per picture
    labels: list[str | None]
    characters: list[str]  # the gallery's characters (sorted), the columns
    per_view: list[np.ndarray]  # per picture: its views × characters best similarities


def embed_set(
    embedder: Embedder, detector: FaceDetector, paths: list[str], labels: Sequence[str | None], cache: Path
) -> Pictures:
    """Embed pictures through the engine's views, cached by model fingerprint and file list."""
    key = hashlib.sha256("\n".join([embedder.fingerprint, *paths]).encode()).hexdigest()[:16]
    file = cache / f"{embedder.fingerprint}-{key}.npz"
    if file.is_file():
        saved = np.load(file)
        return Pictures(paths, list(labels), saved["vectors"], saved["owner"])
    print(f"embedding {len(paths)} pictures…", file=sys.stderr, flush=True)
    vectors, owner = embed_pictures(embedder, paths, detector)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(file, vectors=vectors, owner=owner)
    return Pictures(paths, list(labels), vectors, owner)


def negatives_halves(folder: Path) -> tuple[list[str], list[str]]:
    """The negatives' pictures in two seeded halves: (for fitting, for checking)."""
    paths = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    random.Random(0).shuffle(paths)
    half = len(paths) // 2
    return sorted(paths[:half]), sorted(paths[half:])


def draw_answers(
    pictures: Pictures,
    negatives: Pictures,
    folders: list[Path],
    sizes: list[int],
    draws: int,
    excluded: frozenset[str] | set[str] = frozenset(),
    trained: frozenset[str] | set[str] = frozenset(),
) -> list[Answers]:
    """Similarities of every query for every gallery drawn from `folders`' characters, `draws` seeds per size.

    A size smaller than all takes the shuffled characters in turn (at most `ROTATIONS` galleries per draw), so that
    every character is a gallery's once per draw where there are few. `excluded` characters take no part;
    pictures in `trained` (`picture_key`s: the answering model trained on them) may sit in a gallery, never be asked.
    """
    asked = {path for path in pictures.paths if picture_key(path) not in trained}
    result = []
    for draw in range(draws):
        split = make_split(folders, unseen=1.0, gallery_size=GALLERY_SIZE, seed=draw)
        names = sorted(set(split.gallery) - excluded)
        random.Random(draw).shuffle(names)
        result += split_answers(pictures, negatives, split, names, sizes, draw, asked)
    return result


def split_answers(
    pictures: Pictures,
    negatives: Pictures,
    split: Split,
    names: list[str],
    sizes: list[int],
    draw: int,
    asked: set[str],
) -> list[Answers]:
    """Similarities of every query of `split` for galleries of `sizes` of `names`' characters (taken in turn).

    A gallery is `split.gallery` of its characters; the `asked` paths among the others' pictures are the queries.
    """
    everything = np.concatenate([pictures.vectors, negatives.vectors])
    offset = len(pictures.vectors)
    index = {path: number for number, path in enumerate(pictures.paths)}
    result = []
    for size in sizes:
        count = len(names) + size if size <= 0 else min(size, len(names))
        turns = range(0, len(names), count) if count < len(names) else [0]
        for turn in list(turns)[:ROTATIONS]:
            rotated = names[turn:] + names[:turn]
            result.append(
                _answers(everything, offset, index, asked, pictures, negatives, split, rotated, count, size, draw)
            )
    return result


def _answers(
    everything: np.ndarray,
    offset: int,
    index: dict[str, int],
    asked: set[str],
    pictures: Pictures,
    negatives: Pictures,
    split: Split,
    names: list[str],
    count: int,
    size: int,
    draw: int,
) -> Answers:
    """Every query against the gallery of the first `count` of `names` (the others are missing from it), compared
    as the index compares them (`Comparison`; `everything`: the pictures' views, then the negatives')."""
    chosen = sorted(names[:count])
    column_lists: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    columns_, owners_, pictures_ = column_lists
    for number, character in enumerate(chosen):
        for path in split.gallery[character]:
            views = pictures.views(index[path])
            columns_.append(views)
            owners_.append(np.full(len(views), number))
            pictures_.append(np.full(len(views), index[path]))
    columns, column_owner, column_picture = (np.concatenate(part) for part in column_lists)
    answers = Answers(size, draw, [], [], chosen, [])
    queries = [(p, c, "known") for c in chosen for p in split.query[c]]
    queries += [(p, c, "missing") for c in names[count:] for p in split.gallery[c] + split.query[c]]
    queries = [query for query in queries if query[0] in asked]
    rows = [pictures.views(index[path]) for path, _, _ in queries]
    rows += [offset + negatives.views(number) for number in range(len(negatives.paths))]
    gallery = everything[columns]
    comparison = Comparison.fit(gallery, column_owner)
    similarity = comparison.apply(everything[np.concatenate(rows)]) @ comparison.apply(gallery).T
    per_character, _ = character_similarities(similarity, column_picture, column_owner, len(chosen))
    answers.per_view = np.split(per_character, np.cumsum([len(r) for r in rows])[:-1])
    answers.groups = [group for _, _, group in queries] + ["negative"] * len(negatives.paths)
    answers.labels = [label for _, label, _ in queries] + [None] * len(negatives.paths)
    return answers


def _subjects(per_view: np.ndarray) -> list[np.ndarray]:
    """A picture's answers as the bot cuts them: views × characters per character found."""
    return [per_view[list(rows)] for rows in subject_views(len(per_view) - 1)]


def fit(answers: list[Answers], prior: Calibration | None = None, strength: float = 0.0) -> Calibration:
    """The logistic model over every answer's top character, groups weighted equally per gallery size.

    With a `prior`, the weights are pulled toward its own with `strength` (in answers), and where no negative was
    asked its background is kept (otherwise the background is the negatives' median top similarity).
    """
    tops = [s.max() for a in answers for g, s in zip(a.groups, a.per_view) if g == "negative"]
    if tops:
        background = float(np.median(tops))
    elif prior is not None:
        background = prior.background
    else:
        raise ValueError("a fit without negatives needs a prior calibration (its background is kept)")
    start = Calibration((0.0,) * (len(FEATURES) + 1), background)
    rows, targets, weights = [], [], []
    for a in answers:
        subjects = [_subjects(per_view) for per_view in a.per_view]
        totals = {g: sum(len(s) for gg, s in zip(a.groups, subjects) if gg == g) for g in GROUPS}
        for group, label, picture in zip(a.groups, a.labels, subjects):
            for per_view in picture:
                features = start.features(per_view)
                top = int(np.argmax(per_view.max(axis=0)))
                rows.append(features[top])
                targets.append(float(label is not None and a.characters[top] == label))
                weights.append(1.0 / max(totals[group], 1))
    x = np.c_[np.ones(len(rows)), np.array(rows)]
    y, w = np.array(targets), np.array(weights) / np.sum(weights) * len(weights)
    centre = np.asarray(prior.weights, dtype=float) if prior is not None else np.zeros(x.shape[1])
    pull = np.r_[strength, np.full(len(centre) - 1, RIDGE + strength)]
    beta = centre.copy()
    for _ in range(50):  # Newton's method (IRLS) with a ridge toward the prior (a small one toward 0 without)
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -50, 50)))
        gradient = x.T @ (w * (p - y)) + pull * (beta - centre)
        hessian = (x * (w * p * (1 - p))[:, None]).T @ x + np.diag(pull)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return Calibration(tuple(float(b) for b in beta), background)


def outcomes(calibration: Calibration, answers: Answers) -> tuple[np.ndarray, np.ndarray]:
    """Per picture: the probability of its most confident answer, and whether that answer is its character."""
    return bot_answers(answers.per_view, np.array(answers.characters), answers.labels, calibration)


def figures(calibration: Calibration, answers: list[Answers], threshold: float, unknown: float) -> list[dict]:
    """Per gallery size, over the draws: the share of each group named confidently, and right among the known."""
    rows = []
    for size in dict.fromkeys(a.size for a in answers):
        pooled: dict[str, list] = {g: [[], []] for g in GROUPS}
        characters = []
        for a in (a for a in answers if a.size == size):
            probability, right = outcomes(calibration, a)
            characters.append(len(a.characters))
            groups = np.array(a.groups)
            for g in GROUPS:
                pooled[g][0].append(probability[groups == g])
                pooled[g][1].append(right[groups == g])
        row: dict[str, float | None] = {"size": size, "characters": round(float(np.mean(characters)), 1)}
        for g in GROUPS:
            p, r = np.concatenate(pooled[g][0]), np.concatenate(pooled[g][1])
            sure = p >= threshold
            row[g] = int(len(p))
            row[f"{g}_sure"] = float(sure.mean()) if len(p) else None
            row[f"{g}_unknown"] = float((p < unknown).mean()) if len(p) else None
            if g == "known":
                row["known_top1"] = float(r.mean()) if len(p) else None
                row["known_right"] = float(r[sure].mean()) if sure.any() else None
        rows.append(row)
    return rows


def table(name: str, rows: list[dict]) -> str:
    """Markdown rows of one set's figures."""

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.1f} %"

    lines = []
    for row in rows:
        size = {0: "all", -1: "all but one"}.get(row["size"], str(row["size"]))
        lines.append(
            f"| {name} | {size} ({row['characters']:g}) | {row['known']} | {pct(row['known_top1'])} | "
            f"**{pct(row['known_sure'])}** | **{pct(row['known_right'])}** | {row['missing']} | "
            f"**{pct(row['missing_sure'])}** | {pct(row['missing_unknown'])} | {row['negative']} | "
            f"**{pct(row['negative_sure'])}** | {pct(row['negative_unknown'])} |"
        )
    return "\n".join(lines)


TABLE_HEAD = (
    "| set | gallery (characters) | queries | top-1 | named confidently | right when named | "
    'missing-character pictures | named confidently | "no character I know" | negatives | '
    'named confidently | "no character I know" |\n|---|---|---|---|---|---|---|---|---|---|---|---|'
)


def sweep(calibration: Calibration, answers: list[Answers]) -> str:
    """How the fit set's answers change with the threshold, pooled over sizes: to choose the default."""
    lines = ["threshold  known-sure  known-right  missing-sure  negative-sure"]
    pooled: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {g: ([], []) for g in GROUPS}
    for a in answers:
        probability, right = outcomes(calibration, a)
        groups = np.array(a.groups)
        for g in GROUPS:
            pooled[g][0].append(probability[groups == g])
            pooled[g][1].append(right[groups == g])
    p = {g: np.concatenate(pooled[g][0]) for g in GROUPS}
    r = np.concatenate(pooled["known"][1])
    for threshold in (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
        sure = p["known"] >= threshold
        share_right = float(r[sure].mean()) if sure.any() else float("nan")
        lines.append(
            f"{threshold:9.2f}  {sure.mean():10.3f}  {share_right:11.3f}  "
            f"{(p['missing'] >= threshold).mean():12.3f}  {(p['negative'] >= threshold).mean():13.3f}"
        )
    return "\n".join(lines)


def _config(model_dir: Path) -> dict:
    """A model directory's config.json as written, or {} when it has none (or a bad one)."""
    try:
        config = json.loads((model_dir / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def trained_on(model_dir: Path) -> set[str]:
    """The characters a model directory was trained on (its config.json says)."""
    return set(_config(model_dir).get("trained_on", []))


def made_as(model_dir: Path, embedder: Embedder) -> str:
    """How a model directory makes its embeddings: variant, dimensions and any weight beside raw ImageNet features."""
    beside = _config(model_dir).get("beside_imagenet")
    made = f"{embedder.config.variant}, {embedder.dim} dimensions"
    return f"{made}, beside ImageNet at w = {beside}" if beside else made


def labelled(folders: list[Path]) -> tuple[list[str], list[str]]:
    """Every picture of the folders' characters, and its character."""
    paths, labels = [], []
    for folder in folders:
        files, _ = scan_gallery(folder)
        paths += [str(f.path) for f in files]
        labels += [f.character for f in files]
    return paths, labels


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the model directory; calibration.json goes here")
    parser.add_argument(
        "--fit",
        type=Path,
        nargs="+",
        required=True,
        help="character folders to fit on (only characters the fit model never trained on)",
    )
    parser.add_argument(
        "--fit-model",
        type=Path,
        help="model whose answers the fit uses (default: --model): a sibling trained without some "
        "--fit characters, so that the fit sees characters it never trained on, as members' are",
    )
    parser.add_argument("--negatives", type=Path, required=True, help="pictures of no character (split in halves)")
    parser.add_argument("--check", type=Path, nargs="+", required=True, help="character folders to confirm on")
    parser.add_argument("--draws", type=int, default=5, help="seeded galleries per size")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[1, 5, -1, 0],
        help="characters in the gallery (0: all, -1: all but one)",
    )
    parser.add_argument("--cache", type=Path, default=Path("runs/calibrate-cache"), help="embeddings cache")
    parser.add_argument("--table", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    settings = load_settings()
    fit_model = args.fit_model or args.model
    embedders = {"fit": Embedder.load(fit_model), "check": Embedder.load(args.model)}
    made = {name: made_as(path, embedders[name]) for name, path in (("fit", fit_model), ("check", args.model))}
    if made["fit"] != made["check"]:
        parser.error(
            f"--fit-model {fit_model} ({made['fit']}) is not made as --model {args.model} ({made['check']}): "
            "its answers would calibrate another embedding; fit on a sibling made the same way (for a "
            "composed model, `python -m training.beside` with the same --weight)"
        )
    trained = {"fit": trained_on(fit_model), "check": trained_on(args.model)}
    trained_files = {"fit": trained_pictures(fit_model), "check": trained_pictures(args.model)}
    detector = FaceDetector()
    fit_negatives, check_negatives = negatives_halves(args.negatives)
    sets, characters = {}, {}
    for name, folders, negatives in (("fit", args.fit, fit_negatives), ("check", args.check, check_negatives)):
        paths, labels = labelled(folders)
        excluded = trained[name] if name == "fit" else set()  # fitted on characters its model never saw
        characters[name] = sorted(set(labels) - excluded)
        if len(characters[name]) < 2:
            parser.error(
                f"{fit_model} was trained on the --fit characters: pass --fit-model, a model trained "
                "without (some of) them (training.train --unseen)"
            )
        print(
            f"{name}: {len(characters[name])} characters ({len(set(labels) & trained[name])} of them trained on by "
            f"{fit_model if name == 'fit' else args.model}{', left out' if name == 'fit' else ''})",
            file=sys.stderr,
        )
        if set(labels) & trained[name] and not trained_files[name]:
            print(
                f"{name}: no split.json lists the pictures its model trained on: every picture is asked",
                file=sys.stderr,
            )
        pictures = embed_set(embedders[name], detector, paths, labels, args.cache)
        negative = embed_set(embedders[name], detector, negatives, [None] * len(negatives), args.cache)
        sets[name] = draw_answers(pictures, negative, folders, args.sizes, args.draws, excluded, trained_files[name])
    calibration = fit(sets["fit"])
    threshold, unknown = in_force(None, settings.confidence_threshold), settings.unknown_threshold
    print(sweep(calibration, sets["fit"]), file=sys.stderr)
    results = {name: figures(calibration, answers, threshold, unknown) for name, answers in sets.items()}
    command = "python -m training.calibrate " + " ".join(sys.argv[1:] if argv is None else argv)
    markdown = "\n".join([TABLE_HEAD, table("fit", results["fit"]), table("check", results["check"])])
    calibration = Calibration(
        calibration.weights,
        calibration.background,
        {
            "command": command,
            "fit": [str(f) for f in args.fit],
            "check": [str(f) for f in args.check],
            "fit_model": str(fit_model),
            "fit_characters": characters["fit"],
            "check_characters_trained_on": sorted(set(characters["check"]) & trained["check"]),
            "negatives": str(args.negatives),
            "draws": args.draws,
            "sizes": args.sizes,
            "confidence_threshold": threshold,
            "unknown_threshold": unknown,
            "figures": results,
        },
    )
    saved = calibration.save(args.model)
    print(f"weights {dict(zip(('bias', *FEATURES), calibration.weights))}, background {calibration.background:.3f}")
    print(f"CONFIDENCE_THRESHOLD {threshold}, UNKNOWN_THRESHOLD {unknown}; saved {saved}")
    print(markdown)
    if args.table:
        args.table.write_text(markdown + "\n")
    print(json.dumps(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
