"""One builder per model variant. Every model takes 0–255 RGB and ends in L2-normalised embeddings.

Frozen-backbone variants are built as `image → features (frozen) → head`, so training can cache the
features once and fit only the head; the saved model is the whole thing, standard Keras layers only.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from hxhbot.engine.model_dir import build_pretrained, mobilenet_v2, preprocessing_layer

VARIANTS = ("seed", "pretrained", "softmax", "vae", "hunter", "tuned")
DEFAULT_VARIANT = "tuned"
INPUT_SIZES = {"seed": 64, "pretrained": 224, "softmax": 64, "vae": 64, "hunter": 80, "tuned": 224}
TUNED_FROM = "block_12_add"  # `tuned` trains MobileNetV2 from here on (blocks 13–16 and the last 1×1 conv)
WHITENING_REGULARISER = 0.1  # added to every eigenvalue, as a share of their mean, before whitening
WHITENING_POWER = 0.25  # each principal direction scaled by variance^-power: 0.5 would whiten fully


def build(
    variant: str, input_size: int | None = None, weights: str | None = "imagenet", classes: int = 2
) -> tf.keras.Model:
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
    if variant == "tuned":
        return build_tuned(size, weights)
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
    pooled = tf.keras.layers.GlobalAveragePooling2D(name="pool")(
        backbone(preprocessing_layer()(inputs), training=False)
    )
    return tf.keras.Model(inputs, pooled, name="features")


def build_softmax(input_size: int = 64, weights: str | None = "imagenet", dim: int = 128) -> tf.keras.Model:
    """Frozen features → Dense embedding, trained through a softmax classifier (dropped after training)."""
    features = pooled_features(input_size, weights)
    head = tf.keras.Sequential(
        [tf.keras.Input((features.output_shape[-1],)), tf.keras.layers.Dense(dim, name="embedding")], name="head"
    )
    return _assemble(features, head, "softmax")


def build_vae(input_size: int = 64, weights: str | None = "imagenet", latent: int = 64) -> tf.keras.Model:
    """Frozen features → a VAE encoder's mean (the decoder and variance exist only in training)."""
    features = pooled_features(input_size, weights)
    head = tf.keras.Sequential(
        [
            tf.keras.Input((features.output_shape[-1],)),
            tf.keras.layers.Dense(512, activation="relu", name="encoder"),
            tf.keras.layers.Dense(latent, name="latent_mean"),
        ],
        name="head",
    )
    return _assemble(features, head, "vae")


TAPS = ("block_6_expand_relu", "block_10_expand_relu", "block_13_expand_relu", "out_relu")
PALETTE_LEVELS = 8  # colour centres per RGB axis: 8³ = 512 histogram bins


def colour_histogram(pixels: tf.Tensor, levels: int = PALETTE_LEVELS) -> tf.Tensor:
    """Soft colour histogram of [-1, 1] pixels over the `levels`³ palette grid, square-rooted and L2-normalised.

    Each pixel x is shared among palette colours c in proportion to exp(−β‖x − c‖²), β about one
    grid step. Over a grid this factorises by channel, so it is computed as three `levels`-way
    softmaxes (a fixed 1×1 depthwise convolution gives 2β·x·c − β·c² per channel and level) whose
    outer product, summed over the pixels, is one batched matrix product. Fixed, not trained.
    """
    axis = np.linspace(-1.0, 1.0, levels, dtype=np.float32)
    sharpness = (levels - 1) ** 2 / 2.0
    height, width = pixels.shape[1], pixels.shape[2]
    assign = tf.keras.layers.DepthwiseConv2D(1, depth_multiplier=levels, trainable=False, name="colour_assign")
    logits = assign(pixels)
    assign.set_weights([np.tile(2 * sharpness * axis, (1, 1, 3, 1)), np.tile(-sharpness * axis**2, 3)])
    logits = tf.keras.layers.Reshape((height * width, 3, levels), name="colour_channels")(logits)
    shares = tf.keras.layers.Softmax(axis=-1, name="colour_share")(logits)
    red, green, blue = shares[:, :, 0], shares[:, :, 1], shares[:, :, 2]
    red_green = tf.keras.layers.Reshape((height * width, levels**2), name="colour_red_green")(
        red[:, :, :, None] * green[:, :, None, :]
    )
    joint = tf.linalg.matmul(red_green, blue, transpose_a=True)  # Σ over pixels of red ⊗ green ⊗ blue
    histogram = tf.keras.layers.Reshape((levels**3,), name="colour_histogram")(joint)
    histogram = tf.keras.layers.Rescaling(1.0 / (height * width), name="colour_mean")(histogram)
    return tf.keras.layers.UnitNormalization(name="colour_normalise")(tf.math.sqrt(histogram))


def describing_features(input_size: int, weights: str | None, colour_weight: float = 1.0) -> tf.keras.Model:
    """Frozen ImageNet MobileNetV2 taps at four depths (GeM-pooled, mirror-averaged) beside a colour histogram.

    ImageNet features are trained to ignore colour; a drawn character's identity is largely its
    colours (hair, eyes, outfit), so the histogram carries what the backbone throws away.
    """
    inputs = tf.keras.Input((input_size, input_size, 3), name="image")
    backbone = mobilenet_v2(input_size, weights)
    backbone.trainable = False
    taps = tf.keras.Model(backbone.input, [backbone.get_layer(name).output for name in TAPS], name="taps")
    taps.trainable = False
    pixels = preprocessing_layer()(inputs)
    norm = tf.keras.layers.UnitNormalization(name="tap_normalise")
    pool = tf.keras.layers.GlobalAveragePooling2D(name="pool")

    def describe(image: tf.Tensor) -> tf.Tensor:
        pooled = [tf.math.pow(pool(tf.math.pow(tap, 3.0)), 1.0 / 3.0) for tap in taps(image, training=False)]
        return tf.keras.layers.Concatenate()([norm(p) for p in pooled])  # GeM (p = 3) per tap

    mirrored = tf.reverse(pixels, axis=[2])  # TFOpLambda layers (tf.reverse, tf.math.*): saved by name
    shapes = tf.keras.layers.Add(name="flip_average")([describe(pixels), describe(mirrored)])
    shapes = tf.keras.layers.UnitNormalization(name="shape_normalise")(shapes)
    colours = tf.keras.layers.Rescaling(colour_weight, name="colour_weight")(colour_histogram(pixels))
    both = tf.keras.layers.Concatenate(name="shape_and_colour")([shapes, colours])
    return tf.keras.Model(inputs, tf.keras.layers.UnitNormalization(name="features_normalise")(both), name="features")


def build_hunter(
    input_size: int = 80, weights: str | None = "imagenet", dim: int = 128, keep: float = 1.5
) -> tf.keras.Model:
    """Ours: frozen shape and colour features, kept (× `keep`) beside a cosine-softmax projection of them."""
    features = describing_features(input_size, weights)
    inputs = tf.keras.Input((features.output_shape[-1],))
    projection = tf.keras.layers.Dense(dim, use_bias=False, name="projection")(inputs)
    projection = tf.keras.layers.UnitNormalization(name="projection_normalise")(projection)
    kept = tf.keras.layers.Rescaling(keep, name="keep_features")(inputs)
    head = tf.keras.Model(inputs, tf.keras.layers.Concatenate(name="embedding")([kept, projection]), name="head")
    return _assemble(features, head, "hunter")


def build_tuned(input_size: int = 224, weights: str | None = "imagenet") -> tf.keras.Model:
    """Whole pictures: ImageNet MobileNetV2 at 224 px, its top blocks fine-tuned on many identities, GeM-pooled.

    `features` is the frozen bottom (to block 12, cached in training); `head` is blocks 13–16 and
    the last 1×1 convolution (batch norms frozen), GeM-pooled (p = 3): the embedding is the
    backbone's own pooled description, which carries over to characters it never trained on
    better than a projection trained on top of it, whitened after training (`fit_whitening`).
    """
    backbone = mobilenet_v2(input_size, weights)
    inputs = tf.keras.Input((input_size, input_size, 3), name="image")
    bottom = tf.keras.Model(backbone.input, backbone.get_layer(TUNED_FROM).output, name="bottom")
    bottom.trainable = False
    features = tf.keras.Model(inputs, bottom(preprocessing_layer()(inputs), training=False), name="features")
    maps, top = _top_blocks(backbone)
    pooled = tf.math.pow(
        tf.keras.layers.GlobalAveragePooling2D(name="gem")(tf.math.pow(tf.nn.relu(top) + 1e-6, 3.0)), 1.0 / 3.0
    )
    head = tf.keras.Model(maps, pooled, name="head")
    return _assemble(features, head, "tuned", whitening=True)


def beside_imagenet(
    tuned: tf.keras.Model, weight: float, centre: np.ndarray, weights: str | None = "imagenet"
) -> tf.keras.Model:
    """`tuned`'s embedding side by side with raw ImageNet features of the same frozen bottom, cosine weighted `weight`.

    The raw features are MobileNetV2's own blocks 13–16, average-pooled and L2-normalised, as `pretrained`'s (the
    bottom, `features`, is computed once for both), then moved away from `centre` (their mean over the tuned run's
    training views, as the tuned part's whitening is centred on its own) and normalised again: without it every
    drawing shares a large raw component, and a one-character gallery finds everything alike. Each part is unit
    length, scaled by √weight and √(1 − weight), so the cosine of two embeddings is `weight` × the tuned cosine +
    (1 − `weight`) × the centred raw one.
    """
    if not 0.0 < weight < 1.0:  # at 1 it would be `tuned` itself, padded with zeros that change the index's damping
        raise ValueError(f"the tuned features' weight must be in (0, 1), not {weight}")
    size = int(tuned.input_shape[1])
    raw = raw_features_of_maps(size, weights)
    centred = tf.keras.layers.Normalization(
        mean=np.asarray(centre, np.float32)[None],
        variance=np.ones((1, len(centre)), np.float32),
        name="imagenet_centre",
    )(raw.output)
    imagenet_top = tf.keras.Model(raw.input, tf.keras.layers.UnitNormalization()(centred), name="imagenet_top")
    imagenet_top.trainable = False
    inputs = tf.keras.Input((size, size, 3), name="image")
    shared = tuned.get_layer("features")(inputs)
    own = shared
    for layer in tuned.layers[tuned.layers.index(tuned.get_layer("features")) + 1 :]:
        own = layer(own)
    parts = [
        tf.keras.layers.Rescaling(float(np.sqrt(weight)), name="tuned_part")(own),
        tf.keras.layers.Rescaling(float(np.sqrt(1.0 - weight)), name="imagenet_part")(imagenet_top(shared)),
    ]
    return tf.keras.Model(inputs, tf.keras.layers.Concatenate(name="embedding")(parts), name=f"{tuned.name}_imagenet")


def raw_features_of_maps(size: int, weights: str | None = "imagenet") -> tf.keras.Model:
    """Raw ImageNet features of the frozen bottom's maps (MobileNetV2's own blocks 13–16, average-pooled, unit
    length): `pretrained`'s features, and the raw part of `beside_imagenet` before its centring."""
    maps, top = _top_blocks(mobilenet_v2(size, weights, name="imagenet"))
    return tf.keras.Model(maps, tf.keras.layers.UnitNormalization()(tf.keras.layers.GlobalAveragePooling2D()(top)))


def _top_blocks(backbone: tf.keras.Model) -> tuple[tf.Tensor, tf.Tensor]:
    """(input, output) of `backbone`'s layers after `TUNED_FROM`, re-applied to a new input, batch norms frozen."""
    bottom = backbone.get_layer(TUNED_FROM).output
    maps = tf.keras.Input(bottom.shape[1:], name="maps")
    tensors = {bottom.ref(): maps}
    for layer in backbone.layers[backbone.layers.index(backbone.get_layer(TUNED_FROM)) + 1 :]:
        inbound = [tensors[tensor.ref()] for tensor in tf.nest.flatten(layer.input)]
        tensors[layer.output.ref()] = layer(inbound if len(inbound) > 1 else inbound[0])
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.trainable = False  # small CPU batches: keep ImageNet's statistics
    return maps, tensors[backbone.output.ref()]


def fit_whitening(model: tf.keras.Model, embeddings: np.ndarray) -> None:
    """Set `model`'s whitening layer from `embeddings`: its own unit vectors of training views, before whitening.

    Centring on their mean and dividing every principal direction by its variance to the power `WHITENING_POWER`
    (each eigenvalue regularised by `WHITENING_REGULARISER` of their mean) keeps the few directions that all
    drawings share (style, framing, background) from dominating the cosine. Half-way, not full, whitening: the
    strongest directions are also those that tell the trained characters apart, and flattening them entirely
    lets characters it never trained on compete with them at the trained ones' expense.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    mean = embeddings.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(embeddings - mean, rowvar=False, bias=True))
    regularised = np.maximum(values, 0.0) + WHITENING_REGULARISER * values.mean() + 1e-12
    kernel = vectors / regularised**WHITENING_POWER
    model.get_layer("whitening").set_weights([kernel.astype(np.float32), (-mean @ kernel).astype(np.float32)])


def _assemble(features: tf.keras.Model, head: tf.keras.Model, name: str, whitening: bool = False) -> tf.keras.Model:
    """image → features → head → L2-normalise (→ whitening → L2-normalise: an identity until `fit_whitening`)."""
    inputs = tf.keras.Input(features.input_shape[1:], name="image")
    outputs = tf.keras.layers.UnitNormalization(name="l2_normalise")(head(features(inputs)))
    if whitening:
        width = int(outputs.shape[-1])
        outputs = tf.keras.layers.Dense(width, kernel_initializer="identity", trainable=False, name="whitening")(
            outputs
        )
        outputs = tf.keras.layers.UnitNormalization(name="whitened")(outputs)
    return tf.keras.Model(inputs, outputs, name=name)
