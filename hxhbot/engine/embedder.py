"""Image arrays in, unit-length embeddings out: served through TensorFlow Lite, Keras where a model is trained."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from hxhbot.config import Settings
from hxhbot.engine.interpreter import LiteInterpreter
from hxhbot.engine.model_dir import (
    ModelConfig,
    ModelError,
    build_pretrained,
    fingerprint,
    has_model,
    lite_model,
    load_model_dir,
    read_config,
)

log = logging.getLogger(__name__)
Forward = Callable[[np.ndarray], np.ndarray]  # `(n, size, size, 3)` 0–255 float32 arrays → the model's `(n, dim)`


class Embedder:
    """A model's forward pass (TensorFlow Lite or Keras), fed `max_batch` arrays a call, its outputs unit length.

    `forward_alone`, when given, serves a picture that nothing else waits beside (`embed(..., alone=True)`): more
    threads for one picture's latency, where under load one thread a call leaves the other cores to decoding.
    """

    def __init__(
        self, forward: Forward, config: ModelConfig, max_batch: int = 64, forward_alone: Forward | None = None
    ) -> None:
        self.forward = forward
        self.forward_alone = forward_alone or forward
        self.config = config
        self.max_batch = max_batch

    @classmethod
    def load(cls, model_dir: str | Path, max_batch: int = 64, threads: int = Settings.model_threads) -> Embedder:
        """Serve `model_dir`'s model through its TensorFlow Lite copy, or ImageNet features when none is trained."""
        if Path(model_dir).exists() and not Path(model_dir).is_dir():
            raise ModelError(f"The model folder {model_dir} is a file: set MODEL_DIR to a model folder.")
        if not has_model(model_dir):
            log.warning("no trained model in %s: using pretrained ImageNet MobileNetV2 features (Keras)", model_dir)
            return cls.from_model(build_pretrained(weights="imagenet"), "pretrained", max_batch)
        config = read_config(model_dir)
        try:
            content = lite_model(model_dir)
        except ModelError as error:  # a model whose copy disagrees with it (or cannot be made) is served as it is
            log.warning("%s: serving %s through Keras", error, model_dir)
            return cls.load_keras(model_dir, max_batch)
        interpreter = LiteInterpreter(content, config.input_size, 1)
        if interpreter.dim != config.embedding_dim:
            raise ModelError(
                f"{model_dir}: the TensorFlow Lite model gives {interpreter.dim} dimensions, "
                f"config.json says {config.embedding_dim}"
            )
        alone = LiteInterpreter(content, config.input_size, threads) if threads > 1 else None
        log.info(
            "serving %s model from %s through TensorFlow Lite (fingerprint %s; %d thread%s for a picture alone, "
            "one a call under load)",
            config.variant,
            model_dir,
            config.fingerprint,
            threads,
            "" if threads == 1 else "s",
        )
        return cls(interpreter, config, max_batch, alone)

    @classmethod
    def load_keras(cls, model_dir: str | Path, max_batch: int = 64) -> Embedder:
        """The Keras model of `model_dir` itself: the training artefact its TensorFlow Lite copy is checked against."""
        model, config = load_model_dir(model_dir)
        return cls(_keras_forward(model), config, max_batch)

    @classmethod
    def from_model(cls, model: tf.keras.Model, variant: str, max_batch: int = 64) -> Embedder:
        """Wrap an in-memory Keras model (training, evaluation, tests)."""
        config = ModelConfig(
            variant, int(model.input_shape[1]), int(model.output_shape[-1]), fingerprint=fingerprint(model)
        )
        return cls(_keras_forward(model), config, max_batch)

    @property
    def input_size(self) -> int:
        """Side of the square RGB input, in pixels."""
        return self.config.input_size

    @property
    def dim(self) -> int:
        """Length of an embedding."""
        return self.config.embedding_dim

    @property
    def fingerprint(self) -> str:
        """Identity of the model's weights, recorded in every index it builds."""
        return self.config.fingerprint

    def embed(self, images: np.ndarray, alone: bool = False) -> np.ndarray:
        """Embed a `(n, size, size, 3)` batch of 0–255 RGB arrays into `(n, dim)` unit vectors (`alone`: one
        picture that nothing waits beside, served for latency)."""
        forward = self.forward_alone if alone else self.forward
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        chunks = [forward(images[start : start + self.max_batch]) for start in range(0, len(images), self.max_batch)]
        vectors = np.concatenate(chunks).astype(np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-30)

    def warm_up(self) -> None:
        """Run the model at one image and at a full batch, so first requests are not slow."""
        blank = np.zeros((self.max_batch, self.input_size, self.input_size, 3), np.float32)
        for size in (1, 1, 1, self.max_batch, self.max_batch):  # kernels (Keras's, XNNPACK's) set up on first calls
            self.embed(blank[:size])
        if self.forward_alone is not self.forward:
            self.embed(blank[:1], alone=True)


def _keras_forward(model: tf.keras.Model) -> Forward:
    """`model`'s inference traced once for any batch size."""
    size = int(model.input_shape[1])
    call = tf.function(
        lambda images: model(images, training=False),
        input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
    )
    return lambda images: call(tf.constant(images)).numpy()
