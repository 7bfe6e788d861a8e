"""What a serving process sets in its environment before NumPy and TensorFlow load: both read it once, at import."""

import os

SERVING_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # no CUDA noise
    # OpenBLAS's idle threads spin for a while after every product; the engine's products are small (a picture's
    # views against the gallery) and its own threads need the cores (docs/performance.md)
    "OPENBLAS_NUM_THREADS": "1",
}


def prepare() -> None:
    """Set the serving environment's defaults (an owner's own values win); call it before NumPy is imported."""
    for name, value in SERVING_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
