"""Compose a tuned model directory with raw ImageNet features beside it, into a new model directory.

python -m training.beside --model DIR --weight WEIGHT --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from hxhbot.engine.confidence import CALIBRATION_FILE  # noqa: E402
from hxhbot.engine.detector import FaceDetector  # noqa: E402
from hxhbot.engine.embedder import Embedder  # noqa: E402
from hxhbot.engine.model_dir import (  # noqa: E402
    CONFIG_FILE,
    ModelConfig,
    ModelError,
    build_pretrained,
    load_model_dir,
    read_config,
    save_model_dir,
)
from training.data import Split  # noqa: E402
from training.evaluate import embed_pictures  # noqa: E402
from training.model import beside_imagenet, raw_features_of_maps  # noqa: E402
from training.view_cache import ViewCache  # noqa: E402

VARIANT = "tuned+imagenet"
CARRIED = ("split.json", "history.json", "curves.png")  # what the tuned run wrote beside its model, still true


def compose(model_dir: Path, weight: float, out: Path, cache: Path | None = None) -> dict:
    """Save `beside_imagenet` of the tuned model in `model_dir` into `out`, with its run's files; return the config.

    The raw features' centre is their mean over the views (whole frame and faces, as the engine cuts them) of the
    pictures the tuned run trained on, listed by its split; with a view `cache`, over their cached clean views (the
    first two faces found) through the raw top alone, without decoding a picture the cache holds.
    """
    config = read_config(model_dir)  # refused before the model is loaded, which takes seconds
    if config.variant != "tuned":
        raise ValueError(f"{model_dir} holds a {config.variant} model: only a tuned one can be composed")
    extra = {
        key: value
        for key, value in json.loads((model_dir / CONFIG_FILE).read_text()).items()
        if key not in ModelConfig.__dataclass_fields__
    }  # the run's own keys: save_model_dir writes the rest
    try:
        paths, _ = Split.load(model_dir / extra.get("split", "split.json")).training_images()
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"{model_dir} has no readable split ({error}): the raw features are centred on the "
            "pictures its run trained on"
        ) from None
    model, _ = load_model_dir(model_dir)
    if cache is None:
        raw = Embedder.from_model(build_pretrained(config.input_size), "pretrained")
        centre = embed_pictures(raw, paths, FaceDetector())[0].mean(axis=0)
    else:
        views = ViewCache(cache, model.get_layer("features")).views(paths)
        raw_of_maps = raw_features_of_maps(config.input_size)
        centre = raw_of_maps.predict(views.maps[views.clean].astype(np.float32), batch_size=128, verbose=0).mean(axis=0)
    composed = beside_imagenet(model, weight, centre)
    out.mkdir(parents=True, exist_ok=True)
    (out / CALIBRATION_FILE).unlink(missing_ok=True)  # fitted on another embedding: refit with training.calibrate
    for name in CARRIED:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, out / name)
    save_model_dir(composed, VARIANT, out, **extra, tuned_fingerprint=config.fingerprint, beside_imagenet=weight)
    return json.loads((out / CONFIG_FILE).read_text())


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m training.beside", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a tuned model directory (training.train)")
    parser.add_argument("--weight", type=float, required=True, help="the tuned cosine's weight, between 0 and 1")
    parser.add_argument("--out", type=Path, required=True, help="model directory to write (not --model)")
    parser.add_argument("--cache", type=Path, help="the view cache the run trained from (training.train --cache)")
    args = parser.parse_args(argv)
    if args.out.resolve() == args.model.resolve():
        parser.error("--out must differ from --model: the tuned model is kept to compose again")
    if not 0.0 < args.weight < 1.0:
        parser.error(f"--weight must be in (0, 1), not {args.weight:g}")
    try:
        config = compose(args.model, args.weight, args.out, args.cache)
    except (ModelError, ValueError) as error:
        parser.error(str(error))
    print(
        f"{config['variant']} ({config['embedding_dim']} dimensions, tuned cosine weighted {args.weight:g}) → "
        f"{args.out}; refit its confidence with training.calibrate"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
