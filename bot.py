"""Start hxhbot: `python bot.py` (settings from .env; see .env.example)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported: no CUDA noise

from hxhbot.bot import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
