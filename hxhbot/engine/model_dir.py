"""The model directory: an embedding model saved beside the config that says how to feed it, and its serving copy."""

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

from hxhbot.engine.gallery import picture_key
from hxhbot.wording import counted

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
SPLIT_FILE = "split.json"  # which pictures the model trained on: {"seen": [character], "train": {character: [path]}}
LITE_FILE = "model.tflite"  # the serving copy: MODEL_FILE converted to TensorFlow Lite (float32)
LITE_AGREEMENT = 0.9999  # least cosine of the copy's outputs to the Keras model's, checked at every conversion
LITE_KEY_FILE = "model.tflite.json"  # what LITE_FILE was made from, and its checksum: a copy that disagrees is remade
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
    try:
        _cache_lite(out, to_lite(load_model_dir(out)[0]), _lite_key(out, config))  # what is saved, as it loads
    except ModelError as error:
        log.warning("%s: it will be served through Keras", error)
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


def to_lite(model: tf.keras.Model) -> bytes:
    """`model` converted to a TensorFlow Lite float32 model (its batch size left free), checked against it."""
    size = int(model.input_shape[1])
    try:
        traced = tf.function(lambda views: model(views, training=False)).get_concrete_function(
            tf.TensorSpec([None, size, size, 3], tf.float32)
        )
        converter = tf.lite.TFLiteConverter.from_concrete_functions([traced], model)
        converter.experimental_lower_to_saved_model = False  # freeze the graph directly: 1 s, not a SavedModel's 16
        content = converter.convert()
    except Exception as error:  # the converter raises ConverterError, ValueError and others
        raise ModelError(f"the {model.name} model cannot be converted to TensorFlow Lite: {error}") from error
    noise = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3))
    ramp = np.linspace(0, 255, size)[None, :, None, None] * np.array([1.0, 0.5, 0.2])  # smooth, like drawings
    flat = np.zeros((1, 1, size, 1))
    probe = np.concatenate([noise, ramp + flat, 255 - ramp + flat])
    probe = probe.astype(np.float32)
    interpreter = tf.lite.Interpreter(model_content=content, num_threads=1)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], (1, size, size, 3))
    interpreter.allocate_tensors()  # one view per invoke, as LiteInterpreter serves
    lite = []
    for view in probe:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], view[None])
        interpreter.invoke()
        lite.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    keras = model(probe, training=False).numpy()
    lite = np.stack(lite)
    agreement = float(np.min(np.sum(lite * keras, 1) / np.linalg.norm(lite, axis=1) / np.linalg.norm(keras, axis=1)))
    if not agreement >= LITE_AGREEMENT:
        raise ModelError(
            f"the TensorFlow Lite copy of the {model.name} model disagrees with it (cosine {agreement:.4f})"
        )
    return content


def lite_model(model_dir: str | Path) -> bytes:
    """The directory's model as TensorFlow Lite: its cached copy when made from this very model, else converted now."""
    directory = Path(model_dir)
    key = _lite_key(directory, read_config(directory))
    cached = _cached_lite(directory, key)
    if cached is not None:
        return cached
    log.info("converting %s to TensorFlow Lite (once: the copy is kept beside it)", directory / MODEL_FILE)
    content = to_lite(load_model_dir(directory)[0])
    _cache_lite(directory, content, key)
    return content


def _lite_key(directory: Path, config: ModelConfig) -> dict[str, str]:
    """What a serving copy must have been made from: this model (fingerprint and file) by this TensorFlow."""
    try:
        model_sha256 = _sha256(directory / MODEL_FILE)
    except OSError as error:
        raise ModelError(f"{directory / MODEL_FILE} cannot be read: {error}") from error
    return {"fingerprint": config.fingerprint, "model_sha256": model_sha256, "tensorflow": tf.__version__}


def _cached_lite(directory: Path, key: dict[str, str]) -> bytes | None:
    """The cached TensorFlow Lite copy when its key matches and its bytes are the ones recorded, else None."""
    if not (directory / LITE_FILE).exists() and not (directory / LITE_KEY_FILE).exists():
        return None  # a directory saved before serving copies existed
    try:
        recorded = json.loads((directory / LITE_KEY_FILE).read_text())
        content = (directory / LITE_FILE).read_bytes()
    except (OSError, ValueError) as error:
        log.warning("the TensorFlow Lite copy in %s is unreadable (%s): converting again", directory, error)
        return None
    if recorded != {**key, "sha256": hashlib.sha256(content).hexdigest()}:
        log.warning("%s is damaged or was not made from this model: converting again", directory / LITE_FILE)
        return None
    return content


def _cache_lite(directory: Path, content: bytes, key: dict[str, str]) -> None:
    """Keep a TensorFlow Lite copy beside the model, then its key; where that fails, the next load converts again."""
    try:
        _write_atomically(directory / LITE_FILE, content)
        _write_json(directory / LITE_KEY_FILE, {**key, "sha256": hashlib.sha256(content).hexdigest()})
    except OSError as error:
        log.warning(
            "cannot keep the TensorFlow Lite copy in %s (%s): each load converts the model again", directory, error
        )


def _sha256(path: Path) -> str:
    """The SHA-256 of a file, read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_model(model_dir: str | Path) -> str:
    """Which model a directory holds and when it was trained, in a few words for the owner."""
    try:
        raw = json.loads((Path(model_dir) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return "raw ImageNet features (no trained model)"
    characters = counted(len(raw.get("trained_on", [])), "character")
    if raw.get("trained_at"):  # owner training (training/owner.py)
        when = str(raw["trained_at"])[:16].replace("T", " ")
        return f"trained on this gallery ({characters}) on {when} UTC"
    return f"the shipped model ({raw.get('variant', '?')}, trained on {characters})"


def trained_pictures(model_dir: str | Path) -> frozenset[str]:
    """The pictures `model_dir`'s model trained on, as `picture_key`s: the "train" pictures of the "seen" characters
    of the split its config names ("split", by default `SPLIT_FILE`); none when it has no readable split."""
    directory = Path(model_dir)
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        config = {}
    name = config.get("split", SPLIT_FILE) if isinstance(config, dict) else SPLIT_FILE
    try:
        split = json.loads((directory / str(name)).read_text())
        train = split["train"]
        return frozenset(picture_key(str(path)) for character in split["seen"] for path in train.get(character, []))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return frozenset()


def has_model(model_dir: str | Path) -> bool:
    """Whether `model_dir` holds a saved model, or part of one (loading it then says what is missing)."""
    return any((Path(model_dir) / name).exists() for name in (CONFIG_FILE, MODEL_FILE))


def _write_json(path: Path, data: dict) -> None:
    """Write JSON through a temporary file renamed into place."""
    _write_atomically(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _write_atomically(path: Path, data: bytes) -> None:
    """Write bytes to a temporary file of the same folder renamed into place: readers see the old file or the new."""
    handle, staged = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
