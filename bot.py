"""Start hxhbot: `python bot.py` (settings from .env; see .env.example)."""

import argparse

from hxhbot.runtime_env import prepare

prepare()  # before NumPy and TensorFlow are imported

if __name__ == "__main__":
    argparse.ArgumentParser(
        prog="bot.py",
        description="Start hxhbot, the Discord bot that tells which Hunter × Hunter character is in a "
        "picture. It takes no options: settings come from the environment and .env (see .env.example, and "
        "Configuration in README.md).",
    ).parse_args()  # --help, and a clear refusal of anything else, before TensorFlow is imported
    from hxhbot.discord.bot import main

    raise SystemExit(main())
