"""`python -m hxhbot`: the offline command line (index, whois)."""

from hxhbot.runtime_env import prepare

prepare()  # before NumPy and TensorFlow are imported

from hxhbot.cli import main  # noqa: E402

raise SystemExit(main())
