"""Image arrays in, unit-length embeddings out, through one compiled call of the model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from hxhbot.engine.model_dir import ModelConfig, ModelError, build_pretrained, fingerprint, has_model, load_model_dir

log = logging.getLogger(__name__)


class Embedder:
    """A loaded embedding model with a traced, batch-polymorphic inference function."""

    def __init__(self, model: tf.keras.Model, config: ModelConfig, max_batch: int = 64) -> None:
        self.model = model
        self.config = config
        self.max_batch = max_batch
        size = config.input_size
        self._call = tf.function(
            lambda images: model(images, training=False),
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
        )

    @classmethod
    def load(cls, model_dir: str | Path, max_batch: int = 64) -> Embedder:
        """Load the trained model in `model_dir`, or ImageNet features when none has been trained."""
        if Path(model_dir).exists() and not Path(model_dir).is_dir():
            raise ModelError(f"The model folder {model_dir} is a file: set MODEL_DIR to a model folder.")
        if has_model(model_dir):
            model, config = load_model_dir(model_dir)
            log.info("loaded %s model from %s (fingerprint %s)", config.variant, model_dir, config.fingerprint)
        else:
            log.warning("no trained model in %s: using pretrained ImageNet MobileNetV2 features", model_dir)
            model = build_pretrained(weights="imagenet")
            config = cls._describe(model, "pretrained")
        return cls(model, config, max_batch)

    @classmethod
    def from_model(cls, model: tf.keras.Model, variant: str, max_batch: int = 64) -> Embedder:
        """Wrap an in-memory model (training, evaluation, tests)."""
        return cls(model, cls._describe(model, variant), max_batch)

    @staticmethod
    def _describe(model: tf.keras.Model, variant: str) -> ModelConfig:
        """The config a saved copy of `model` would carry."""
        return ModelConfig(
            variant, int(model.input_shape[1]), int(model.output_shape[-1]), fingerprint=fingerprint(model)
        )

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

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed a `(n, size, size, 3)` batch of 0–255 RGB arrays into `(n, dim)` unit vectors."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        chunks = [
            self._call(tf.constant(images[start : start + self.max_batch])).numpy()
            for start in range(0, len(images), self.max_batch)
        ]
        vectors = np.concatenate(chunks).astype(np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-30)

    def warm_up(self) -> None:
        """Trace and run the model at one image and at a full batch, so first requests are not slow."""
        blank = np.zeros((self.max_batch, self.input_size, self.input_size, 3), np.float32)
        for size in (1, 1, 1, self.max_batch, self.max_batch):  # TF's kernels set up lazily on first calls
            self.embed(blank[:size])
