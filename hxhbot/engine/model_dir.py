"""The model directory: an embedding model saved beside the config that says how to feed it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
PREPROCESSING = "mobilenet_v2"  # RGB 0..255 in, scaled to [-1, 1] by the model's first layer
PRETRAINED_INPUT_SIZE = 224  # raw ImageNet features need the size they were trained at for whole pictures


class ModelError(RuntimeError):
    """A model directory that cannot be loaded; the message says why."""


class WeightsUnavailableError(ModelError):
    """Keras could not download pretrained weights (offline); the message says what to do."""


@dataclass(frozen=True)
class ModelConfig:
    """What the engine must know to feed a model: saved as `config.json` beside the weights."""

    variant: str
    input_size: int
    embedding_dim: int
    preprocessing: str = PREPROCESSING
    fingerprint: str = ""


def preprocessing_layer() -> tf.keras.layers.Layer:
    """MobileNetV2's preprocessing (x / 127.5 - 1) as the model's first layer."""
    return tf.keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")


def mobilenet_v2(input_size: int, weights: str | None, name: str = "mobilenet_v2") -> tf.keras.Model:
    """A MobileNetV2 feature extractor (no top, no pooling) for `input_size`×`input_size` RGB."""
    try:
        backbone = tf.keras.applications.MobileNetV2(
            input_shape=(input_size, input_size, 3), include_top=False, weights=weights
        )
    except Exception as error:  # Keras raises a bare Exception when it cannot download the weights
        if "URL fetch failure" not in str(error):
            raise
        raise WeightsUnavailableError(
            f"The ImageNet weights of MobileNetV2 could not be downloaded ({error}): connect to the internet "
            "once (Keras keeps them in ~/.keras/models) or set MODEL_DIR to a trained model."
        ) from None
    backbone._name = name  # two backbones in one model need distinct names
    return backbone


def build_pretrained(input_size: int = PRETRAINED_INPUT_SIZE, weights: str | None = "imagenet") -> tf.keras.Model:
    """ImageNet MobileNetV2 → global average pooling → L2-normalise: features without training."""
    inputs = tf.keras.Input((input_size, input_size, 3), name="image")
    backbone = mobilenet_v2(input_size, weights)
    backbone.trainable = False
    x = backbone(preprocessing_layer()(inputs), training=False)
    x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = tf.keras.layers.UnitNormalization(name="l2_normalise")(x)
    return tf.keras.Model(inputs, outputs, name="pretrained")


def fingerprint(model: tf.keras.Model) -> str:
    """A short hash of the model's architecture and weights: what an index is tied to."""
    digest = hashlib.sha256(model.to_json().encode())
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()[:16]


def save_model_dir(model: tf.keras.Model, variant: str, out_dir: str | Path, **extra: object) -> ModelConfig:
    """Save `model` and its config into `out_dir`, replacing any model there atomically per file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = int(model.input_shape[1])
    config = ModelConfig(variant, size, int(model.output_shape[-1]), fingerprint=fingerprint(model))
    with tempfile.TemporaryDirectory(dir=out) as scratch:
        staged = Path(scratch) / MODEL_FILE
        model.save(staged)
        os.replace(staged, out / MODEL_FILE)
    _write_json(out / CONFIG_FILE, {**asdict(config), **extra})
    return config


def read_config(model_dir: str | Path) -> ModelConfig:
    """A model directory's config, without loading its model; raise `ModelError` when it is unusable."""
    directory = Path(model_dir)
    try:
        raw = json.loads((directory / CONFIG_FILE).read_text())
        config = ModelConfig(**{key: raw[key] for key in ModelConfig.__dataclass_fields__ if key in raw})
    except (OSError, ValueError, TypeError) as error:
        raise ModelError(f"{directory / CONFIG_FILE} is missing or malformed: {error}") from error
    if config.preprocessing != PREPROCESSING:
        raise ModelError(f"{directory}: unknown preprocessing {config.preprocessing!r}")
    return config


def load_model_dir(model_dir: str | Path) -> tuple[tf.keras.Model, ModelConfig]:
    """Load a saved model directory; raise `ModelError` with a clear reason when it is unusable."""
    directory = Path(model_dir)
    config = read_config(directory)
    try:
        model = tf.keras.models.load_model(directory / MODEL_FILE, compile=False)
    except (OSError, ValueError) as error:
        raise ModelError(f"{directory / MODEL_FILE} cannot be loaded: {error}") from error
    if tuple(model.input_shape[1:]) != (config.input_size, config.input_size, 3):
        raise ModelError(f"{directory}: model input {model.input_shape} disagrees with config.json")
    return model, config


def has_model(model_dir: str | Path) -> bool:
    """Whether `model_dir` holds a saved model, or part of one (loading it then says what is missing)."""
    return any((Path(model_dir) / name).exists() for name in (CONFIG_FILE, MODEL_FILE))


def _write_json(path: Path, data: dict) -> None:
    """Write JSON through a temporary file renamed into place."""
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(staged, path)
