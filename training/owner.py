"""Owner training: the serving model fine-tuned on the owner's own gallery, kept only when it ranks better.

`python -m training.train --data data/gallery --out DIR` (no `--variant`) runs `train_owner`. The model it starts
from (MODEL_DIR, `--start`) keeps its composition: only its tuned top blocks (`head`) learn; its frozen bottom,
whitening and the raw ImageNet features beside it stay as they are. A quarter of each character's pictures
(whole sources, seeded) are held out of training. They are ranked against the other pictures after every epoch,
which chooses how long to train (from none at all), and once more by the starting model: DIR receives whichever
ranks them better (the start on a tie), its confidence refitted on those held-out answers.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import tensorflow as tf

from hxhbot.engine.atomic_dir import replace_dir
from hxhbot.engine.confidence import Calibration
from hxhbot.engine.detector import FaceDetector
from hxhbot.engine.gallery import scan_gallery
from hxhbot.engine.index import Comparison
from hxhbot.engine.model_dir import CONFIG_FILE, ModelConfig, has_model, load_model_dir, save_model_dir
from training import calibrate
from training.data import Split, source_groups
from training.metrics import view_similarities
from training.train import TUNED_MARGIN, TUNED_SCALE, _CosineClassifier, _margin_loss
from training.view_cache import ViewCache

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # (stage, done, total)
SUMMARY_FILE = "owner-training.json"
HELD_OUT = 0.25  # of each character's pictures (whole sources), never trained on: they choose and check
MIN_PICTURES = 3  # a character with fewer has none held out (all of them train)
LEARNING_RATE = 3e-4  # the shipped recipe's, and the best of the three trials (#46)
DISTIL = 0.1  # weight of keeping each view's embedding near the starting model's (1 − cosine): a light anchor
MAX_EPOCHS = 20
PATIENCE = 5  # epochs without a better held-out ranking before stopping
MIN_GAIN = 2  # held-out pictures more ranked first for a trained model to be kept: one is within chance
EPOCH_VIEWS = 2  # views drawn per training picture and epoch (at least MIN_EPOCH_VIEWS)
MIN_EPOCH_VIEWS = 256
BATCH = 64
ROUNDS = 4  # augmented whole frames cached per picture (and half as many per face)
CHUNK = 32  # pictures decoded and passed through the frozen bottom at a time
PRIOR = 20.0  # pull of the refitted confidence toward the starting model's, in answers
CALIBRATION_SIZES = (1, 5, -1, 0)  # characters in the galleries its answers are drawn from (0: all, -1: all but one)
CALIBRATION_DRAWS = 3  # orders in which those galleries take the characters


class OwnerTrainingError(ValueError):
    """A gallery or model that owner training cannot use; the message says why."""


@dataclass
class OwnerSummary:
    """What an owner training run did, and which model it kept."""

    kept: str  # "trained" or "start"
    start: str
    characters: int
    trained_pictures: int
    held_out: int  # pictures ranked to choose and check
    start_top1: float
    trained_top1: float
    start_mrr: float
    trained_mrr: float
    epochs: int  # the best trained epoch's (whose figures are the trained ones)
    epochs_run: int
    seconds: float
    trained_at: str
    history: list[dict] = field(default_factory=list)

    def describe(self) -> str:
        """One paragraph for people."""
        change = self.trained_top1 - self.start_top1
        verdict = (
            f"kept the trained model (epoch {self.epochs} of {self.epochs_run})"
            if self.kept == "trained"
            else f"kept the starting model: not {MIN_GAIN} more ranked first ({self.epochs_run} epochs tried)"
        )
        return (
            f"{self.held_out} held-out pictures of {self.characters} characters ranked first "
            f"{self.trained_top1:.1%} by the trained model and {self.start_top1:.1%} by the starting model "
            f"({change * 100:+.1f} points; mean reciprocal rank {self.trained_mrr:.3f} against "
            f"{self.start_mrr:.3f}): {verdict}; {self.seconds / 60:.1f} min."
        )


@dataclass
class _Views:
    """Frozen-bottom maps of views, each view's picture, and which views are clean (cut as the engine cuts)."""

    maps: np.ndarray
    owner: np.ndarray
    clean: np.ndarray


def train_owner(
    gallery: Path,
    out: Path,
    start: Path,
    *,
    progress: Progress | None = None,
    seed: int = 0,
    max_epochs: int = MAX_EPOCHS,
    cache: Path | None = None,
) -> OwnerSummary:
    """Fine-tune `start` on `gallery`, check it on held-out pictures, and write the better model into `out`.

    `out` is replaced as a whole, atomically, and only at the end: an interrupted run leaves it as it was. The views'
    bottom maps are kept in `cache` (`training.view_cache`; default: a folder removed with the run), so that a run
    on the same pictures from a model with the same bottom computes only the new ones.
    """
    started = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    if not has_model(start):
        raise OwnerTrainingError(
            f"{start} holds no trained model: owner training starts from one (the shipped model/ of the repository)"
        )
    model, config = load_model_dir(start)
    names = {layer.name for layer in model.layers}
    if not {"features", "head"} <= names:
        raise OwnerTrainingError(
            f"{start} holds a {config.variant} model: owner training needs a tuned one (the shipped model)"
        )
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not has_model(out))):
        raise OwnerTrainingError(f"{out} exists and holds no model: name a new folder or a model folder to replace")
    train, held = hold_out(gallery, seed)
    characters = sorted(train)
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.training-", dir=out.resolve().parent))
    scratch = cache or Path(tempfile.mkdtemp(prefix=f".{out.name}.views-", dir=out.resolve().parent))
    try:
        summary = _train(
            scratch,
            model,
            config.variant,
            start,
            train,
            held,
            characters,
            staged,
            report,
            seed,
            max_epochs,
            started,
        )
        if summary.kept == "start" and out.resolve() == start.resolve():
            shutil.copy2(staged / SUMMARY_FILE, out / SUMMARY_FILE)  # the model there stays as it is
        else:
            replace_dir(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
        if cache is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return summary


def hold_out(gallery: Path, seed: int = 0) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Each character's pictures in two: to train on, and `HELD_OUT` of them (whole sources) to choose and check."""
    files, _ = scan_gallery(gallery)
    paths: dict[str, list[str]] = {}
    for file in files:
        paths.setdefault(file.character, []).append(str(file.path))
    if len(paths) < 2:
        raise OwnerTrainingError(f"{gallery} has {len(paths)} character(s): training needs at least two")
    rng = random.Random(seed)
    train: dict[str, list[str]] = {}
    held: dict[str, list[str]] = {}
    for name in sorted(paths):
        groups = source_groups(sorted(paths[name]))
        rng.shuffle(groups)
        count = round(len(paths[name]) * HELD_OUT) if len(paths[name]) >= MIN_PICTURES else 0
        held[name] = []
        for group in groups:
            if len(held[name]) + len(group) <= count and len(group) < len(paths[name]):
                held[name] += group
        train[name] = sorted(set(paths[name]) - set(held[name]))
        held[name].sort()
    if not any(held.values()):
        raise OwnerTrainingError(
            f"{gallery} has no character with {MIN_PICTURES} pictures or more: nothing can "
            "be held out to check the training"
        )
    return train, held


def _train(
    cache: Path,
    model: tf.keras.Model,
    variant: str,
    start: Path,
    train: dict[str, list[str]],
    held: dict[str, list[str]],
    characters: list[str],
    staged: Path,
    report: Progress,
    seed: int,
    max_epochs: int,
    started: float,
) -> OwnerSummary:
    """The run itself: views, epochs chosen on the held-out pictures, the kept model saved into `staged`."""
    tf.keras.utils.set_random_seed(seed)
    views = ViewCache(cache, model.get_layer("features"), FaceDetector())
    train_paths = [p for c in characters for p in train[c]]
    held_paths = [p for c in characters for p in held[c]]
    train_labels = np.array([n for n, c in enumerate(characters) for _ in train[c]])
    held_labels = np.array([n for n, c in enumerate(characters) for _ in held[c]])
    total = len(train_paths) + len(held_paths)
    report("views", 0, total)
    learning = _views(views, train_paths, ROUNDS, seed, lambda done: report("views", done, total))
    checking = _views(views, held_paths, 0, seed, lambda done: report("views", len(train_paths) + done, total))
    gallery = _Views(learning.maps[learning.clean], learning.owner[learning.clean], learning.clean[learning.clean])
    top = TopOfMaps(model)
    head = model.get_layer("head")
    fixed = {"gallery": top.fixed(gallery.maps), "held": top.fixed(checking.maps)}

    def score() -> tuple[float, float]:
        return ranking_score(
            top(gallery.maps, fixed["gallery"]),
            gallery.owner,
            train_labels,
            top(checking.maps, fixed["held"]),
            checking.owner,
            held_labels,
        )

    first = score()
    log.info("the starting model: held-out top-1 %.3f, mean reciprocal rank %.3f", *first)
    best, best_epoch, best_weights = (-1.0, -1.0), 0, head.get_weights()  # the best trained epoch's
    history = [{"epoch": 0, "top1": first[0], "mrr": first[1]}]
    step = _trainer(head, learning, train_labels, len(characters))
    rng = np.random.default_rng(seed)
    per_epoch = max(EPOCH_VIEWS * len(train_paths), MIN_EPOCH_VIEWS)
    report("training", 0, max_epochs)
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        losses = [step(rows) for rows in _epoch_batches(rng, len(learning.maps), per_epoch)]
        current = score()
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "top1": current[0], "mrr": current[1]})
        log.info(
            "epoch %d: loss %.3f, held-out top-1 %.3f, mean reciprocal rank %.3f", epoch, np.mean(losses), *current
        )
        if current > best:
            best, best_epoch, best_weights = current, epoch, head.get_weights()
        report("training", epoch, max_epochs)
        if epoch - (best_epoch if best > first else 0) >= PATIENCE:  # no better ranking for a while
            break
    gained = round((best[0] - first[0]) * len(held_paths))  # pictures more ranked first than by the start
    kept = "trained" if gained >= MIN_GAIN else "start"  # one picture of a small gallery is no evidence
    summary = OwnerSummary(
        kept,
        str(start),
        len(characters),
        len(train_paths),
        len(held_paths),
        first[0],
        best[0],
        first[1],
        best[1],
        best_epoch,
        epoch,
        0.0,
        datetime.now(UTC).isoformat(timespec="seconds"),
        history,
    )
    report("saving", 0, 1)
    if kept == "trained":
        head.set_weights(best_weights)
        _save_trained(model, variant, start, staged, top, gallery, checking, train, held, summary)
    else:
        for item in start.iterdir():
            if item.is_file():
                shutil.copy2(item, staged / item.name)
    summary.seconds = round(time.perf_counter() - started, 1)
    (staged / SUMMARY_FILE).write_text(json.dumps(asdict(summary), indent=1) + "\n")
    report("saving", 1, 1)
    return summary


def owner_split(start: Path, train: dict[str, list[str]], held: dict[str, list[str]]) -> Split:
    """The trained model's split.json: the gallery's training pictures (`train`, also its `gallery`), its held-out
    ones (`query`: they chose the epochs but never trained), and the starting model's own split (its `train` and
    `val`, characters and folders), since the new model learnt from those too."""
    characters = sorted(train)
    learnt = {c: list(train[c]) for c in characters}
    judged: dict[str, list[str]] = {c: [] for c in characters}
    try:
        earlier = Split.load(start / json.loads((start / CONFIG_FILE).read_text()).get("split", "split.json"))
    except (OSError, ValueError, TypeError, KeyError):  # a start without a split (raw ImageNet's features)
        earlier = Split(0, [], [], {}, {}, {}, {})
    for character in earlier.seen:
        learnt[character] = sorted({*learnt.get(character, []), *earlier.train.get(character, [])})
        judged[character] = sorted(set(earlier.val.get(character, [])) - set(train.get(character, [])))
    return Split(0, sorted({*characters, *earlier.seen}), [], learnt, judged,
                 {c: list(train[c]) for c in characters}, {c: list(held[c]) for c in characters},
                 dict(earlier.folders))  # fmt: skip


def ranking_score(
    gallery: np.ndarray,
    gallery_owner: np.ndarray,
    gallery_labels: np.ndarray,
    queries: np.ndarray,
    query_owner: np.ndarray,
    query_labels: np.ndarray,
) -> tuple[float, float]:
    """(top-1, mean reciprocal rank) of the query pictures' characters, ranked as the index ranks them."""
    comparison = Comparison.fit(gallery, gallery_labels[gallery_owner])
    per_view = view_similarities(
        comparison.apply(queries), query_owner, comparison.apply(gallery), gallery_owner, gallery_labels
    )
    best = np.stack([views.max(axis=0) for views in per_view])
    classes = np.unique(gallery_labels)
    right = best[np.arange(len(query_labels)), np.searchsorted(classes, query_labels)]
    ranks = (best >= right[:, None]).sum(axis=1)  # a tie is no win: a model that sees nothing ranks nothing first
    return float(np.mean(ranks == 1)), float(np.mean(1.0 / ranks))


def _views(cache: ViewCache, paths: list[str], rounds: int, seed: int, done: Callable[[int], None]) -> _Views:
    """Every picture's views (clean, and `rounds` augmentation rounds) through the frozen bottom, a chunk at a time
    (`ViewCache`: computed once, read after), as float16 maps."""
    maps, owner, clean = [], [], []
    for start in range(0, len(paths), CHUNK):
        views = cache.views(paths[start : start + CHUNK], rounds=rounds, seed=seed)
        maps.append(views.maps)
        owner.append(views.owners + start)
        clean.append(views.clean)
        done(min(start + CHUNK, len(paths)))
    return _Views(np.concatenate(maps), np.concatenate(owner), np.concatenate(clean))


class TopOfMaps:
    """The model from its frozen bottom's maps on (the layers after `features`, sharing their weights).

    Whatever does not depend on `head` (the raw ImageNet features beside it) is computed once per set of maps
    (`fixed`); the rest on every call.
    """

    def __init__(self, model: tf.keras.Model) -> None:
        specs = [spec for spec in model.get_config()["layers"] if spec["class_name"] != "InputLayer"]
        inbound = {spec["name"]: [node[0] for node in spec["inbound_nodes"][0]] for spec in specs}
        live = {"head"}
        for spec in specs:  # in graph order
            if any(name in live for name in inbound[spec["name"]]):
                live.add(spec["name"])
        maps = tf.keras.Input(model.get_layer("features").output_shape[1:], name="maps")
        tensors = {"features": maps}
        for spec in specs:
            if spec["name"] == "features":
                continue
            inputs = [tensors[name] for name in inbound[spec["name"]]]
            tensors[spec["name"]] = model.get_layer(spec["name"])(inputs if len(inputs) > 1 else inputs[0])
        frontier = sorted(
            {name for spec in specs if spec["name"] in live for name in inbound[spec["name"]]} - live - {"features"}
        )
        self._fixed = _batched(tf.keras.Model(maps, [tensors[name] for name in frontier])) if frontier else None
        fed = [tf.keras.Input(tensors[name].shape[1:]) for name in frontier]
        rebuilt = {"features": maps, **dict(zip(frontier, fed))}
        for spec in specs:
            if spec["name"] in live:
                inputs = [rebuilt[name] for name in inbound[spec["name"]]]
                rebuilt[spec["name"]] = model.get_layer(spec["name"])(inputs if len(inputs) > 1 else inputs[0])
        output = model.get_config()["output_layers"][0][0]
        self._live = tf.keras.Model([maps, *fed], rebuilt[output])
        signature = [[tf.TensorSpec((None, *tensor.shape[1:]), tf.float32) for tensor in self._live.inputs]]
        self._call = tf.function(lambda inputs: self._live(inputs, training=False), input_signature=signature)

    def fixed(self, maps: np.ndarray) -> list[np.ndarray]:
        """The parts that never change in training, for these maps."""
        if self._fixed is None:
            return []
        parts = self._fixed(maps)
        return parts if isinstance(parts, list) else [parts]

    def embed(self, maps: np.ndarray) -> np.ndarray:
        """Unit embeddings of `maps`, as the engine's `Embedder.embed` gives them for the same views."""
        vectors = self(maps, self.fixed(maps))
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-30)

    def __call__(self, maps: np.ndarray, fixed: list[np.ndarray]) -> np.ndarray:
        """Embeddings of `maps` by the current weights (`fixed`: `self.fixed(maps)`)."""
        out = [
            self._call(
                [tf.constant(maps[i : i + BATCH], tf.float32), *[tf.constant(f[i : i + BATCH]) for f in fixed]]
            ).numpy()
            for i in range(0, len(maps), BATCH)
        ]
        return np.concatenate(out)


def _batched(model: tf.keras.Model) -> Callable[[np.ndarray], np.ndarray | list[np.ndarray]]:
    """A compiled, batched inference function over numpy arrays (one or several outputs)."""
    signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)]
    call = tf.function(lambda x: model(x, training=False), input_signature=signature)

    def run(data: np.ndarray) -> np.ndarray | list[np.ndarray]:
        chunks = [call(tf.constant(data[i : i + BATCH], tf.float32)) for i in range(0, len(data), BATCH)]
        if isinstance(chunks[0], (list, tuple)):
            return [np.concatenate([c[n].numpy() for c in chunks]) for n in range(len(chunks[0]))]
        return np.concatenate([c.numpy() for c in chunks])

    return run


def _trainer(head: tf.keras.Model, views: _Views, labels: np.ndarray, classes: int) -> Callable[[np.ndarray], float]:
    """One optimiser step on the given view rows: cosine softmax with a margin, plus staying near the start."""
    for layer in head.layers:
        layer.trainable = not isinstance(layer, tf.keras.layers.BatchNormalization)  # keep ImageNet's statistics
    start = _batched(head)(views.maps)
    start /= np.maximum(np.linalg.norm(start, axis=1, keepdims=True), 1e-12)
    targets = labels[views.owner]
    classifier = _CosineClassifier(classes, scale=TUNED_SCALE)
    classifier(tf.zeros((1, start.shape[1])))  # built through a call, so that the kernel set below is the one used
    means = np.stack([start[targets == c].mean(axis=0) for c in range(classes)], axis=1)
    classifier.kernel.assign(means / np.maximum(np.linalg.norm(means, axis=0, keepdims=True), 1e-12))
    loss_of = _margin_loss(classes, TUNED_SCALE, TUNED_MARGIN)
    optimizer = tf.keras.optimizers.Adam(LEARNING_RATE)
    variables = head.trainable_variables + classifier.trainable_variables

    @tf.function(reduce_retracing=True, autograph=False)  # plain tensor code: nothing to convert
    def step(maps: tf.Tensor, target: tf.Tensor, old: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            new = tf.math.l2_normalize(head(maps, training=True), axis=-1)
            loss = tf.reduce_mean(loss_of(target, classifier(new)))
            loss += DISTIL * tf.reduce_mean(1.0 - tf.reduce_sum(new * old, axis=-1))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def run(rows: np.ndarray) -> float:
        rows = np.sort(rows)
        return float(
            step(
                tf.constant(views.maps[rows], tf.float32),
                tf.constant(targets[rows], tf.int32),
                tf.constant(start[rows]),
            )
        )

    return run


def _epoch_batches(rng: np.random.Generator, views: int, count: int) -> list[np.ndarray]:
    """`count` view rows drawn without repeats until all are used, in batches of `BATCH`."""
    order = np.concatenate([rng.permutation(views) for _ in range(-(-count // views))])[:count]
    return [order[i : i + BATCH] for i in range(0, count - BATCH // 2, BATCH)] or [order]


def _save_trained(
    model: tf.keras.Model,
    variant: str,
    start: Path,
    staged: Path,
    top: TopOfMaps,
    gallery: _Views,
    checking: _Views,
    train: dict[str, list[str]],
    held: dict[str, list[str]],
    summary: OwnerSummary,
) -> None:
    """Save the trained model composed as the start, with its split and a confidence refitted on held-out answers."""
    characters = sorted(train)
    raw = json.loads((start / CONFIG_FILE).read_text())
    extra = {key: value for key, value in raw.items() if key not in ModelConfig.__dataclass_fields__}
    split = owner_split(start, train, held)
    split.save(staged / "split.json")
    save_model_dir(
        model,
        variant,
        staged,
        **{
            **extra,
            "split": "split.json",
            "trained_on": characters,
            "owner_trained_from": raw.get("fingerprint", ""),
            "trained_at": summary.trained_at,
        },
    )
    train_paths = [p for c in characters for p in train[c]]
    held_paths = [p for c in characters for p in held[c]]
    vectors = np.concatenate([top(gallery.maps, top.fixed(gallery.maps)), top(checking.maps, top.fixed(checking.maps))])
    owner = np.concatenate([gallery.owner, checking.owner + len(train_paths)])
    labels: list[str | None] = [c for c in characters for _ in train[c]]
    labels += [c for c in characters for _ in held[c]]
    pictures = calibrate.Pictures(train_paths + held_paths, labels, vectors, owner)
    negatives = calibrate.Pictures([], [], np.zeros((0, vectors.shape[1]), np.float32), np.zeros(0, int))
    answers = []
    for draw in range(CALIBRATION_DRAWS):
        names = list(characters)
        random.Random(draw).shuffle(names)
        answers += calibrate.split_answers(
            pictures, negatives, split, names, list(CALIBRATION_SIZES), draw, set(held_paths)
        )
    fitted = calibrate.fit(answers, prior=Calibration.load(start), strength=PRIOR)
    Calibration(
        fitted.weights,
        fitted.background,
        {
            "command": "owner training (training/owner.py)",
            "fit": "held-out pictures of the gallery it trained on",
            "prior": "the starting model's calibration",
            "prior_strength": PRIOR,
            "answers": int(sum(len(a.groups) for a in answers)),
        },
    ).save(staged)
