"""Train the serving model on an owner's gallery, or a model variant, into a model directory the engine loads.

python -m training.train --data data/gallery --out DIR           (owner training: training/owner.py)
python -m training.train --data DIR --variant NAME --out DIR [--epochs N] [--split FILE] ...

Frozen-backbone variants cache their features once (a clean pass plus `--augment-rounds` augmented
passes) and fit only the head. The seed caches its frozen branch and trains the scratch branch on
P×K-balanced batches. Every variant checkpoints its best validation recall@1, stops early, resumes
after an interruption (re-run the same command), and writes history.json and curves.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_addons as tfa  # noqa: E402

from hxhbot.config import load_settings  # noqa: E402
from hxhbot.engine.model_dir import ModelError, save_model_dir  # noqa: E402
from training.data import (  # noqa: E402
    Split,
    augment,
    encode_labels,
    load_arrays,
    make_split,
    pk_batches,
    series_of,
)
from training.model import DEFAULT_VARIANT, INPUT_SIZES, VARIANTS, build, fit_whitening  # noqa: E402
from training.view_cache import CachedViews, ViewCache  # noqa: E402

log = logging.getLogger("training.train")
TUNED_EPOCHS = 6  # the loss is near its floor by then; the top's weights are averaged over the last epochs
TUNED_BATCH = 64
TUNED_SCALE = 24.0
TUNED_MARGIN = 0.1
TUNED_LEARNING_RATE = 3e-4
TUNED_AVERAGE_FROM = 2  # the top's weights are averaged over the epochs from this one to the last
SAMPLINGS = ("views", "characters", "series")  # how the top's batches draw views (`view_batches`)
LOSSES = ("cosface", "arcface")  # the top's margin: on the cosine (CosFace) or on the angle (ArcFace)
ARCFACE_MARGIN = 0.3  # radians added to the angle of the right class
TOP_BLOCKS = (13, 14, 15, 16)  # the tuned top's MobileNetV2 blocks: `--train-from` freezes those before it


def train(
    data: list[Path],
    variant: str,
    out: Path,
    *,
    epochs: int | None = None,
    split_file: Path | None = None,
    input_size: int | None = None,
    weights: str | None = "imagenet",
    augment_rounds: int = 8,
    patience: int = 10,
    seed: int = 0,
    verbose: int = 1,
    unseen: float = 0.4,
    query: float = 1 / 3,
    held_out: list[Path] | tuple = (),
    cache: Path | None = None,
    sampling: str = "views",
    steps: int | None = None,
    loss: str = "cosface",
    train_from: int = TOP_BLOCKS[0],
) -> dict:
    """Train `variant` on the split's seen characters of the `data` folders and save the model directory; return
    the history. `tuned` reads its views' bottom maps from `cache` (default: a folder in `out`, removed at the
    end), computing the missing ones."""
    tf.keras.utils.set_random_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    split = (
        Split.load(split_file).training_only(data)
        if split_file
        else _split_in(out, data, seed, unseen, query, held_out)
    )
    split.save(out / "split.json")
    size = input_size or INPUT_SIZES[variant]
    model = build(variant, size, weights)
    train_paths, train_labels = split.training_images()
    val_paths, val_labels = split.validation_images()
    labels, names = encode_labels(train_labels)
    val_labels_int = np.array([names.index(label) for label in val_labels], np.int32)
    started = time.perf_counter()
    history: dict = {}
    if variant == "tuned":
        history = _fit_tuned(
            model,
            train_paths,
            labels,
            val_paths,
            val_labels_int,
            len(names),
            out,
            epochs or TUNED_EPOCHS,
            patience,
            augment_rounds // 2,
            verbose,
            seed,
            cache or out / "view-cache",
            TopRecipe(sampling, steps, loss, train_from, series_codes(names)),
        )
    elif variant != "pretrained":
        images, val_images = load_arrays(train_paths, size), load_arrays(val_paths, size)
        if variant == "seed":
            history = _fit_seed(
                model, images, labels, val_images, val_labels_int, out, epochs or 200, patience, verbose
            )
        else:
            history = _fit_head(
                model,
                variant,
                images,
                labels,
                val_images,
                val_labels_int,
                len(names),
                out,
                epochs or 60,
                patience,
                augment_rounds,
                verbose,
            )
    seconds = time.perf_counter() - started
    epochs_run = len(history.get("loss", []))
    summary = {
        "variant": variant,
        "input_size": size,
        "seconds": round(seconds, 1),
        "epochs": epochs_run,
        "seconds_per_epoch": round(seconds / epochs_run, 2) if epochs_run else 0.0,
        "train_images": len(train_paths),
        "history": history,
    }
    save_model_dir(model, variant, out, split="split.json", trained_on=split.seen, seconds_to_train=summary["seconds"])
    (out / "history.json").write_text(json.dumps(summary, indent=1) + "\n")
    for leftover in ("best.weights.h5", "best.weights.json", "average.weights.npz", "average.weights.json"):
        (out / leftover).unlink(missing_ok=True)  # the saved model holds the weights kept
    shutil.rmtree(out / "backup", ignore_errors=True)
    if cache is None:
        shutil.rmtree(out / "view-cache", ignore_errors=True)
    if history:
        _plot(history, out / "curves.png", variant)
    log.info("%s: %.1f s (%s s/epoch), saved to %s", variant, seconds, summary["seconds_per_epoch"], out)
    return summary


class RecallCheckpoint(tf.keras.callbacks.Callback):
    """Validation recall@1 each epoch (val images ranked against training images); stop after `patience` epochs
    without a better one, and keep the best weights in `weights_path` unless `keep_best` is false."""

    def __init__(
        self,
        embed,
        gallery,
        gallery_labels,
        queries,
        query_labels,
        weights_path: Path,
        patience: int,
        keep_best: bool = True,
    ) -> None:
        super().__init__()
        self.embed, self.gallery, self.queries = embed, gallery, queries
        self.gallery_labels, self.query_labels = gallery_labels, query_labels
        self.weights_path, self.patience, self.keep_best = weights_path, patience, keep_best
        self.state_path = weights_path.with_suffix(".json")
        state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        self.best, self.wait = state.get("best", -1.0), state.get("wait", 0)  # survives a resume

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        recall = 0.0  # without validation pictures every epoch ties, and the last one is kept
        if len(self.query_labels):
            similarity = self.embed(self.queries) @ self.embed(self.gallery).T
            recall = float(np.mean(self.gallery_labels[similarity.argmax(axis=1)] == self.query_labels))
        if logs is not None:
            logs["val_recall@1"] = recall
        if recall >= self.best:  # on a tie, the longer-trained weights
            self.best, self.wait = recall, 0
            if self.keep_best:
                self.model.save_weights(self.weights_path)
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True
        self.state_path.write_text(json.dumps({"best": self.best, "wait": self.wait}))


class WeightAverage(tf.keras.callbacks.Callback):
    """The mean of `layer`'s weights at the end of every epoch from `start` on (stochastic weight averaging).

    Kept in `path` (with the epochs it holds) so that a resumed run goes on averaging where it stopped.
    """

    def __init__(self, layer: tf.keras.layers.Layer, path: Path, start: int) -> None:
        super().__init__()
        self.layer, self.path, self.start = layer, path, start
        self.epochs_path = path.with_suffix(".json")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 < self.start:
            return
        done = json.loads(self.epochs_path.read_text()) if self.epochs_path.is_file() else []
        if epoch + 1 in done:
            return
        weights = self.layer.get_weights()
        if done:
            with np.load(self.path) as saved:
                weights = [(saved[f"w{n}"] * len(done) + w) / (len(done) + 1) for n, w in enumerate(weights)]
        np.savez(self.path, **{f"w{n}": w for n, w in enumerate(weights)})
        self.epochs_path.write_text(json.dumps(done + [epoch + 1]))

    def averaged(self) -> list[np.ndarray] | None:
        """The averaged weights (None before `start`)."""
        if not self.path.is_file():
            return None
        with np.load(self.path) as saved:
            return [saved[f"w{n}"] for n in range(len(saved.files))]


def _fit_head(
    model: tf.keras.Model,
    variant: str,
    images: np.ndarray,
    labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    classes: int,
    out: Path,
    epochs: int,
    patience: int,
    rounds: int,
    verbose: int,
) -> dict:
    """Cache frozen features (clean + augmented rounds) once, then fit the head with the variant's loss."""
    features, head = model.get_layer("features"), model.get_layer("head")
    extract = _batched(features)
    clean = extract(images)
    cached = np.concatenate([clean] + [extract(augment(tf.constant(images)).numpy()) for _ in range(rounds)])
    targets = np.tile(labels, rounds + 1)
    val_features = extract(val_images)
    trainer = _head_trainer(variant, head, classes, cached.shape[-1])
    embed = _batched(head)
    checkpoint = RecallCheckpoint(
        lambda f: _unit(embed(f)), clean, labels, val_features, val_labels, out / "best.weights.h5", patience
    )
    fit_targets = cached if variant == "vae" else targets
    history = trainer.fit(
        cached,
        fit_targets,
        batch_size=64,
        epochs=epochs,
        shuffle=True,
        verbose=verbose,
        callbacks=[tf.keras.callbacks.BackupAndRestore(str(out / "backup")), checkpoint],
    )
    trainer.load_weights(out / "best.weights.h5")
    return _clean_history(history.history)


def _fit_tuned(
    model: tf.keras.Model,
    paths: list[str],
    labels: np.ndarray,
    val_paths: list[str],
    val_labels: np.ndarray,
    classes: int,
    out: Path,
    epochs: int,
    patience: int,
    rounds: int,
    verbose: int,
    seed: int,
    cache: Path,
    recipe: TopRecipe,
) -> dict:
    """The frozen bottom's maps of every view (clean and `rounds` augmented) from the view cache, then `fit_top`."""
    cached = ViewCache(cache, model.get_layer("features"))
    views, val = cached.views(paths, rounds), cached.views(val_paths)
    return fit_top(
        model,
        views,
        labels[views.owners],
        classes,
        out,
        epochs,
        seed=seed,
        verbose=verbose,
        patience=patience,
        val=(val.maps[val.whole], val_labels),
        recipe=recipe,
    )


def fit_top(
    model: tf.keras.Model,
    views: CachedViews,
    targets: np.ndarray,
    classes: int,
    out: Path,
    epochs: int,
    *,
    seed: int = 0,
    verbose: int = 0,
    patience: int = 10,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    recipe: TopRecipe | None = None,
) -> dict:
    """Fine-tune a tuned model's top on cached bottom maps (`targets`: each view's class), then whiten it.

    The top (its blocks from `recipe.train_from` on) learns through a cosine softmax with a margin (`recipe.loss`)
    over the training identities, on batches drawn as `recipe.sampling` says (`view_batches`); its
    weights are averaged over the epochs from `TUNED_AVERAGE_FROM` on (steadier on characters it never saw
    than any one epoch's). The classifier is dropped after training and the pooled backbone features,
    whitened on the clean views (whole frames and faces), are the embedding. Resumes from `out` when
    interrupted; logs its progress and the time left. An epoch is `recipe.steps` batches (default: as many views).
    """
    recipe = recipe or TopRecipe()
    maps, head = views.maps, model.get_layer("head")
    freeze_top_before(head, recipe.train_from)
    trainer = _head_trainer("tuned", head, classes, 0, recipe.loss)
    embed = _batched(head)
    val_maps, val_labels = val if val is not None else (maps[:0], np.zeros(0, np.int32))
    checkpoint = RecallCheckpoint(
        lambda m: _unit(embed(m.astype(np.float32))),
        maps[views.whole],
        targets[views.whole],
        val_maps,
        val_labels,
        out / "best.weights.h5",
        patience,
        keep_best=False,
    )  # averaged instead
    rows = view_batches(targets, min(TUNED_BATCH, len(maps)), recipe.sampling, seed, recipe.series)

    def batches():
        for chosen in rows:
            yield maps[chosen].astype(np.float32), targets[chosen]

    spec = (tf.TensorSpec((None, *maps.shape[1:]), tf.float32), tf.TensorSpec((None,), tf.int32))
    dataset = tf.data.Dataset.from_generator(batches, output_signature=spec).prefetch(2)
    average = WeightAverage(head, out / "average.weights.npz", min(TUNED_AVERAGE_FROM, epochs))
    steps = recipe.steps or max(1, len(maps) // TUNED_BATCH)
    history = trainer.fit(
        dataset,
        steps_per_epoch=steps,
        epochs=epochs,
        verbose=verbose,
        callbacks=[
            tf.keras.callbacks.BackupAndRestore(str(out / "backup")),
            checkpoint,
            average,
            Progress(epochs, steps),
        ],
    )
    head.set_weights(average.averaged())
    fit_whitening(model, _unit(embed(maps[views.clean].astype(np.float32))))
    return _clean_history(history.history)


@dataclass(frozen=True)
class TopRecipe:
    """How the tuned top trains: batch sampling, batches an epoch (None: a pass over the views), loss, first block
    trained, and each class's series (a code per class, for 'series' sampling; None: every class its own)."""

    sampling: str = "views"
    steps: int | None = None
    loss: str = "cosface"
    train_from: int = TOP_BLOCKS[0]
    series: np.ndarray | None = None


def series_codes(names: list[str]) -> np.ndarray:
    """Each class's series as an integer (`series_of` its name)."""
    return encode_labels([series_of(name) for name in names])[0]


def view_batches(
    targets: np.ndarray, batch: int, sampling: str, seed: int = 0, series: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """Endless sorted row batches: every view once per pass in a shuffled order ('views'); each row a view of a
    uniformly drawn class ('characters': a character with 6 pictures weighs as much as one with 75); or of a class
    of a series drawn in proportion to the square root of its classes ('series', `series[c]` the series of class c:
    136 operators of one game weigh about 12 times one series' single character, not 136 times)."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, not {sampling!r}")
    rng = np.random.default_rng(seed)
    classes = np.unique(targets)
    by_class = [np.flatnonzero(targets == label) for label in classes]
    weight = np.ones(len(classes))
    if sampling == "series":
        codes = np.asarray(series if series is not None else classes)[classes]
        members = np.bincount(codes)[codes]
        weight = np.sqrt(members) / members  # a series weighs √(its classes), shared by them
    weight /= weight.sum()

    def draw() -> Iterator[np.ndarray]:
        while True:
            if sampling == "views":
                order = rng.permutation(len(targets))
                for start in range(0, len(order) - batch + 1, batch):
                    yield np.sort(order[start : start + batch])
            else:
                yield np.sort([rng.choice(by_class[c]) for c in rng.choice(len(by_class), batch, p=weight)])

    return draw()


class Progress(tf.keras.callbacks.Callback):
    """Logs the epoch and step reached, the time spent and the time left, every `every` seconds and each epoch."""

    def __init__(self, epochs: int, steps: int, every: float = 60.0) -> None:
        super().__init__()
        self.epochs, self.steps, self.every = epochs, steps, every
        self.epoch, self.started, self.first, self.logged = 0, 0.0, 0, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch
        if not self.started:  # the first epoch of this session, which may be a resumed run's third
            self.started, self.first = time.perf_counter(), epoch * self.steps
            self.logged = self.started

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if time.perf_counter() - self.logged >= self.every:
            self._log(batch + 1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._log(self.steps)

    def _log(self, step: int) -> None:
        now = time.perf_counter()
        done = self.epoch * self.steps + step
        left = (now - self.started) / max(1, done - self.first) * (self.epochs * self.steps - done)
        log.info(
            "top: epoch %d/%d, step %d/%d, %.0f s, about %.0f s left",
            self.epoch + 1,
            self.epochs,
            step,
            self.steps,
            now - self.started,
            left,
        )
        self.logged = now


def freeze_top_before(head: tf.keras.Model, block: int) -> None:
    """Keep the top's MobileNetV2 blocks before `block` (of `TOP_BLOCKS`) as ImageNet made them."""
    if block not in TOP_BLOCKS:
        raise ValueError(f"the tuned top trains from one of blocks {', '.join(map(str, TOP_BLOCKS))}, not {block}")
    for layer in head.layers:
        number = layer.name.split("_")[1] if layer.name.startswith("block_") else ""
        if number.isdigit() and int(number) < block:
            layer.trainable = False


def _head_trainer(
    variant: str, head: tf.keras.Model, classes: int, width: int, loss: str = "cosface"
) -> tf.keras.Model:
    """The training-only model around `head`: classifier, cosine classifier or VAE."""
    inputs = tf.keras.Input(head.input_shape[1:] if variant == "tuned" else (width,))
    if variant == "softmax":
        logits = tf.keras.layers.Dense(classes, name="classifier")(head(inputs))
        trainer = tf.keras.Model(inputs, logits)
        trainer.compile(tf.keras.optimizers.Adam(1e-3), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    elif variant == "tuned":
        logits = _CosineClassifier(classes, scale=TUNED_SCALE)(tf.math.l2_normalize(head(inputs), axis=-1))
        trainer = tf.keras.Model(inputs, logits)
        margin = (
            _margin_loss(classes, TUNED_SCALE, TUNED_MARGIN)
            if loss == "cosface"
            else _angular_margin_loss(classes, TUNED_SCALE, ARCFACE_MARGIN)
        )
        trainer.compile(tf.keras.optimizers.Adam(TUNED_LEARNING_RATE), margin)
    elif variant == "hunter":
        projection = head.get_layer("projection_normalise").output
        embed = tf.keras.Model(head.input, projection)(inputs)
        logits = _CosineClassifier(classes, scale=32.0)(embed)
        trainer = tf.keras.Model(inputs, logits)
        trainer.compile(tf.keras.optimizers.Adam(1e-3), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    elif variant == "vae":
        trainer = _Vae(head, width)
        trainer.compile(tf.keras.optimizers.Adam(1e-3))
    else:
        raise ValueError(variant)
    return trainer


def _margin_loss(classes: int, scale: float, margin: float):
    """Softmax cross-entropy on cosine logits with the right class's cosine lowered by `margin` (CosFace)."""

    def loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        logits = logits - scale * margin * tf.one_hot(labels, classes)
        return tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)

    return loss


def _angular_margin_loss(classes: int, scale: float, margin: float):
    """Softmax cross-entropy on cosine logits with `margin` added to the right class's angle (ArcFace; past
    π − `margin`, where the angle cannot grow, its cosine is lowered linearly instead)."""
    threshold, linear = float(np.cos(np.pi - margin)), float(np.sin(np.pi - margin) * margin)

    def loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        right = tf.one_hot(labels, classes)
        cosine = tf.reduce_sum(logits * right, axis=-1) / scale
        sine = tf.sqrt(tf.clip_by_value(1.0 - cosine * cosine, 0.0, 1.0))
        moved = tf.where(cosine > threshold, cosine * np.cos(margin) - sine * np.sin(margin), cosine - linear)
        logits = logits + scale * (moved - cosine)[:, None] * right
        return tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)

    return loss


class _CosineClassifier(tf.keras.layers.Layer):
    """Logits = scale × cosine(embedding, class weight): a normalised softmax for metric learning."""

    def __init__(self, classes: int, scale: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.classes, self.scale = classes, scale

    def get_config(self) -> dict:
        return {**super().get_config(), "classes": self.classes, "scale": self.scale}

    def build(self, shape: tf.TensorShape) -> None:
        self.kernel = self.add_weight("kernel", (shape[-1], self.classes), initializer="glorot_normal")

    def call(self, embedding: tf.Tensor) -> tf.Tensor:
        return self.scale * embedding @ tf.math.l2_normalize(self.kernel, axis=0)


class _Vae(tf.keras.Model):
    """A VAE over frozen features: `head` gives the latent mean; a variance layer and a decoder train with it."""

    def __init__(self, head: tf.keras.Model, width: int) -> None:
        super().__init__()
        self.head = head
        self.hidden = head.get_layer("encoder")
        self.log_var = tf.keras.layers.Dense(head.output_shape[-1], name="latent_log_var")
        self.decoder = tf.keras.Sequential(
            [tf.keras.layers.Dense(512, activation="relu"), tf.keras.layers.Dense(width)]
        )

    def call(self, features: tf.Tensor) -> tf.Tensor:
        return self.head(features)

    def train_step(self, data):
        features = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            mean = self.head(features)
            log_var = self.log_var(self.hidden(features))
            latent = mean + tf.exp(0.5 * log_var) * tf.random.normal(tf.shape(mean))
            reconstruction = tf.reduce_mean(tf.reduce_sum(tf.square(self.decoder(latent) - features), axis=-1))
            kl = -0.5 * tf.reduce_mean(tf.reduce_sum(1 + log_var - tf.square(mean) - tf.exp(log_var), axis=-1))
            loss = reconstruction + 0.1 * kl
        self.optimizer.apply_gradients(zip(tape.gradient(loss, self.trainable_variables), self.trainable_variables))
        return {"loss": loss, "reconstruction": reconstruction, "kl": kl}


def _fit_seed(
    model: tf.keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    out: Path,
    epochs: int,
    patience: int,
    verbose: int,
) -> dict:
    """Cache the frozen branch (it never changes), train the rest with TripletSemiHardLoss on P×K batches."""
    image_in = model.input
    frozen = tf.keras.Model(image_in, model.get_layer("frozen_pool").output)
    cache_in = tf.keras.Input((frozen.output_shape[-1],), name="frozen_features")
    scratch_part = model.get_layer("scratch_dense")(
        model.get_layer("scratch_pool")(
            model.get_layer("scratch_mobilenet_v2")(model.get_layer("preprocess")(image_in))
        )
    )
    x = model.get_layer("concat")([model.get_layer("frozen_dense")(cache_in), scratch_part])
    x = model.get_layer("l2_normalise")(model.get_layer("embedding")(model.get_layer("joint_dense")(x)))
    trainer = tf.keras.Model([image_in, cache_in], x)
    trainer.compile(tf.keras.optimizers.Adam(5e-5), tfa.losses.TripletSemiHardLoss())
    cached, val_cached = _batched(frozen)(images), _batched(frozen)(val_images)
    classes = len(np.unique(labels))
    k = max(2, 64 // classes) if classes < 8 else 8
    p = min(classes, max(2, 64 // k))
    batches = pk_batches(labels, p, k)
    steps = max(1, len(images) // (p * k))

    def generate():
        for index in batches:
            yield (images[index], cached[index]), labels[index]

    spec = (
        (tf.TensorSpec((None, *images.shape[1:]), tf.float32), tf.TensorSpec((None, cached.shape[1]), tf.float32)),
        tf.TensorSpec((None,), tf.int32),
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=spec).prefetch(2)
    embed = _batched(trainer, two_inputs=True)
    checkpoint = RecallCheckpoint(
        embed, (images, cached), labels, (val_images, val_cached), val_labels, out / "best.weights.h5", patience
    )
    history = trainer.fit(
        dataset,
        steps_per_epoch=steps,
        epochs=epochs,
        verbose=verbose,
        callbacks=[tf.keras.callbacks.BackupAndRestore(str(out / "backup")), checkpoint],
    )
    trainer.load_weights(out / "best.weights.h5")
    return _clean_history(history.history)


def _batched(model: tf.keras.Model, two_inputs: bool = False, size: int = 128):
    """A compiled, batched inference function over numpy arrays (never model.predict per image)."""
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def run(data):
        if two_inputs:
            first, second = data
            return np.concatenate(
                [
                    call((tf.constant(first[i : i + size]), tf.constant(second[i : i + size]))).numpy()
                    for i in range(0, len(first), size)
                ]
            )
        return np.concatenate([call(tf.constant(data[i : i + size])).numpy() for i in range(0, len(data), size)])

    return run


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _split_in(out: Path, data: list[Path], seed: int, unseen: float, query: float, held_out: list | tuple) -> Split:
    """The split saved in `out` (resuming), or a new seeded one."""
    existing = out / "split.json"
    if existing.is_file():
        return Split.load(existing)
    return make_split(data, unseen, query=query, seed=seed, held_out=held_out)


def _clean_history(history: dict) -> dict:
    """Keras history as plain floats."""
    return {key: [float(value) for value in values] for key, values in history.items()}


def _plot(history: dict, path: Path, variant: str) -> None:
    """Loss and validation recall@1 per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, left = plt.subplots(figsize=(7, 4))
    left.plot(history["loss"], color="tab:blue", label="loss")
    left.set_xlabel("epoch")
    left.set_ylabel("loss", color="tab:blue")
    right = left.twinx()
    right.plot(history.get("val_recall@1", []), color="tab:green", label="val recall@1")
    right.set_ylabel("validation recall@1", color="tab:green")
    right.set_ylim(0, 1)
    left.set_title(f"{variant}: training loss and validation recall@1")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        required=True,
        help="gallery folders, one sub-folder per character (several are combined)",
    )
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        help=f"train this variant from ImageNet (recipes: training/README.md; usually {DEFAULT_VARIANT}); without it, "
        "the serving model (--start) is fine-tuned on the one --data gallery and kept only if it ranks better",
    )
    parser.add_argument("--start", type=Path, help="owner training: the model to start from (default: MODEL_DIR)")
    parser.add_argument(
        "--json-progress", action="store_true", help="owner training: progress and summary as JSON lines on stdout"
    )
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument(
        "--epochs", type=int, help="at most this many epochs (default: owner 20, seed 200, tuned 6, heads 60)"
    )
    parser.add_argument("--split", type=Path, help="split file to reuse (default: make one, seeded)")
    parser.add_argument("--input-size", type=int, help="override the variant's input size")
    parser.add_argument(
        "--augment-rounds",
        type=int,
        default=8,
        help="augmented passes cached for heads (tuned: half as many per picture, and per face)",
    )
    parser.add_argument("--patience", type=int, default=10, help="epochs without better val recall before stopping")
    parser.add_argument("--unseen", type=float, default=0.4, help="share of characters kept out of training")
    parser.add_argument(
        "--query",
        type=float,
        default=1 / 3,
        help="share of a trained character's pictures (beyond its gallery) held out as queries",
    )
    parser.add_argument(
        "--held-out", type=Path, nargs="+", default=[], help="--data folders none of whose characters are trained on"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("runs/view-cache"),
        help="folder of the bottom's maps of every view (tuned), shared by every run: computed once",
    )
    parser.add_argument("--sampling", choices=SAMPLINGS, default="views", help="how the tuned top's batches draw views")
    parser.add_argument(
        "--steps", type=int, help="batches an epoch of the tuned top (default: one pass over its views)"
    )
    parser.add_argument("--loss", choices=LOSSES, default="cosface", help="the tuned top's margin")
    parser.add_argument(
        "--train-from", type=int, choices=TOP_BLOCKS, default=TOP_BLOCKS[0], help="first block of the top that trains"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for folder in args.data:
        if not folder.is_dir():
            parser.error(f"--data {folder} is not a folder")
    if args.variant is None:
        return _owner_main(parser, args)
    summary = train(
        args.data,
        args.variant,
        args.out,
        epochs=args.epochs,
        split_file=args.split,
        input_size=args.input_size,
        augment_rounds=args.augment_rounds,
        patience=args.patience,
        seed=args.seed,
        unseen=args.unseen,
        query=args.query,
        cache=args.cache,
        sampling=args.sampling,
        steps=args.steps,
        loss=args.loss,
        train_from=args.train_from,
        held_out=args.held_out,
    )
    print(
        f"{summary['variant']}: {summary['seconds']} s, {summary['epochs']} epochs "
        f"({summary['seconds_per_epoch']} s/epoch) → {args.out}"
    )
    return 0


def _owner_main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """`main` without --variant: owner training of the serving model on one gallery."""
    from training.owner import MAX_EPOCHS, OwnerTrainingError, train_owner  # it builds on this module
    from training.progress import ProgressBar

    if len(args.data) != 1:
        parser.error("owner training takes one --data gallery (pass --variant to train a variant on several)")
    start = args.start or load_settings().model_dir
    bar = ProgressBar(sys.stdout, json_lines=True) if args.json_progress else ProgressBar()
    try:
        summary = train_owner(
            args.data[0],
            args.out,
            start,
            progress=bar,
            seed=args.seed,
            max_epochs=args.epochs or MAX_EPOCHS,
            cache=args.cache,
        )
    except (OwnerTrainingError, ModelError) as error:
        parser.error(str(error))
    if args.json_progress:
        print(json.dumps({"summary": asdict(summary)}), flush=True)
    else:
        print(f"{summary.describe()} → {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
