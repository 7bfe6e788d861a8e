"""`python -m hxhbot`: the offline command line (index, whois)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported: no CUDA noise

from hxhbot.cli import main  # noqa: E402

raise SystemExit(main())
