"""One builder per model variant. Every model takes 0–255 RGB and ends in L2-normalised embeddings.

Frozen-backbone variants are built as `image → features (frozen) → head`, so training can cache the
features once and fit only the head; the saved model is the whole thing, standard Keras layers only.
"""

from __future__ import annotations

import tensorflow as tf

from hxhbot.model_dir import build_pretrained, mobilenet_v2, preprocessing_layer

VARIANTS = ("seed", "pretrained", "softmax", "vae", "hunter")
DEFAULT_VARIANT = "hunter"
INPUT_SIZES = {"seed": 64, "pretrained": 64, "softmax": 64, "vae": 64, "hunter": 112}


def build(variant: str, input_size: int | None = None, weights: str | None = "imagenet",
          classes: int = 2) -> tf.keras.Model:
    """The embedding model of `variant` (see the builders below)."""
    size = input_size or INPUT_SIZES[variant]
    if variant == "seed":
        return build_seed(size, weights)
    if variant == "pretrained":
        return build_pretrained(size, weights)
    if variant == "softmax":
        return build_softmax(size, weights)
    if variant == "vae":
        return build_vae(size, weights)
    if variant == "hunter":
        return build_hunter(size, weights)
    raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


def build_seed(input_size: int = 64, weights: str | None = "imagenet") -> tf.keras.Model:
    """The original: frozen ImageNet MobileNetV2 + MobileNetV2 from scratch → 1280+1280 → 2560 → 16 → L2."""
    inputs = tf.keras.Input((input_size, input_size, 3), name="image")
    x = preprocessing_layer()(inputs)
    frozen = mobilenet_v2(input_size, weights, name="frozen_mobilenet_v2")
    frozen.trainable = False
    scratch = mobilenet_v2(input_size, None, name="scratch_mobilenet_v2")
    a = tf.keras.layers.GlobalAveragePooling2D(name="frozen_pool")(frozen(x, training=False))
    a = tf.keras.layers.Dense(1280, activation="relu", name="frozen_dense")(a)
    b = tf.keras.layers.GlobalAveragePooling2D(name="scratch_pool")(scratch(x))
    b = tf.keras.layers.Dense(1280, activation="relu", name="scratch_dense")(b)
    x = tf.keras.layers.Concatenate(name="concat")([a, b])
    x = tf.keras.layers.Dense(2560, activation="relu", name="joint_dense")(x)
    x = tf.keras.layers.Dense(16, name="embedding")(x)
    outputs = tf.keras.layers.UnitNormalization(name="l2_normalise")(x)
    return tf.keras.Model(inputs, outputs, name="seed")


def pooled_features(input_size: int, weights: str | None) -> tf.keras.Model:
    """Frozen ImageNet MobileNetV2 → global average pooling: the seed designs' shared features."""
    inputs = tf.keras.Input((input_size, input_size, 3), name="image")
    backbone = mobilenet_v2(input_size, weights)
    backbone.trainable = False
    pooled = tf.keras.layers.GlobalAveragePooling2D(name="pool")(backbone(preprocessing_layer()(inputs), training=False))
    return tf.keras.Model(inputs, pooled, name="features")


def build_softmax(input_size: int = 64, weights: str | None = "imagenet", dim: int = 128) -> tf.keras.Model:
    """Frozen features → Dense embedding, trained through a softmax classifier (dropped after training)."""
    features = pooled_features(input_size, weights)
    head = tf.keras.Sequential([tf.keras.Input((features.output_shape[-1],)),
                                tf.keras.layers.Dense(dim, name="embedding")], name="head")
    return _assemble(features, head, "softmax")


def build_vae(input_size: int = 64, weights: str | None = "imagenet", latent: int = 64) -> tf.keras.Model:
    """Frozen features → a VAE encoder's mean (the decoder and variance exist only in training)."""
    features = pooled_features(input_size, weights)
    head = tf.keras.Sequential([
        tf.keras.Input((features.output_shape[-1],)),
        tf.keras.layers.Dense(512, activation="relu", name="encoder"),
        tf.keras.layers.Dense(latent, name="latent_mean"),
    ], name="head")
    return _assemble(features, head, "vae")


def multilayer_features(input_size: int, weights: str | None) -> tf.keras.Model:
    """Frozen ImageNet MobileNetV2, mid (block 13) and final activations pooled, averaged with the mirror image."""
    inputs = tf.keras.Input((input_size, input_size, 3), name="image")
    backbone = mobilenet_v2(input_size, weights)
    backbone.trainable = False
    taps = tf.keras.Model(backbone.input, [backbone.get_layer("block_13_expand_relu").output,
                                            backbone.get_layer("out_relu").output], name="taps")
    taps.trainable = False
    preprocess = preprocessing_layer()
    pool = tf.keras.layers.GlobalAveragePooling2D(name="pool")
    norm = tf.keras.layers.UnitNormalization(name="tap_normalise")

    def describe(image: tf.Tensor) -> tf.Tensor:
        middle, final = taps(preprocess(image), training=False)
        return tf.keras.layers.Concatenate()([norm(pool(middle)), norm(pool(final))])

    mirrored = tf.reverse(inputs, axis=[2])  # a TFOpLambda layer: saved by name, no custom object
    both = tf.keras.layers.Add(name="flip_average")([describe(inputs), describe(mirrored)])
    return tf.keras.Model(inputs, tf.keras.layers.UnitNormalization(name="features_normalise")(both), name="features")


def build_hunter(input_size: int = 112, weights: str | None = "imagenet", dim: int = 128,
                 keep: float = 0.5) -> tf.keras.Model:
    """Ours: multi-layer, mirror-averaged frozen features, kept (× `keep`) beside a cosine-softmax projection."""
    features = multilayer_features(input_size, weights)
    inputs = tf.keras.Input((features.output_shape[-1],))
    projection = tf.keras.layers.Dense(dim, use_bias=False, name="projection")(inputs)
    projection = tf.keras.layers.UnitNormalization(name="projection_normalise")(projection)
    kept = tf.keras.layers.Rescaling(keep, name="keep_features")(inputs)
    head = tf.keras.Model(inputs, tf.keras.layers.Concatenate(name="embedding")([kept, projection]), name="head")
    return _assemble(features, head, "hunter")


def _assemble(features: tf.keras.Model, head: tf.keras.Model, name: str) -> tf.keras.Model:
    """image → features → head → L2-normalise."""
    inputs = tf.keras.Input(features.input_shape[1:], name="image")
    outputs = tf.keras.layers.UnitNormalization(name="l2_normalise")(head(features(inputs)))
    return tf.keras.Model(inputs, outputs, name=name)
