"""No interaction or webhook token in the log, even at DEBUG, where discord.py logs request URLs and gateway events."""

from __future__ import annotations

import logging
import re

# the loggers of discord.py that write URLs or payloads carrying an interaction's token
LOGGERS = ("discord.http", "discord.gateway", "discord.webhook.async_", "discord.client", "discord.state")
HIDDEN = "[token hidden]"
_TOKENS = (
    re.compile(r"(/(?:interactions|webhooks)/\d+/)[^/\s?'\"]+"),  # /interactions/{id}/{token}/callback, /webhooks/…
    re.compile(r"""(['"]token['"]\s*:\s*['"])[^'"]*"""),  # an INTERACTION_CREATE event's "token": "…"
)


class TokenFilter(logging.Filter):
    """Rewrites a record's message with every interaction and webhook token replaced by `HIDDEN`."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Hide the tokens; keep the record."""
        message = record.getMessage()
        hidden = message
        for pattern in _TOKENS:
            hidden = pattern.sub(rf"\g<1>{HIDDEN}", hidden)
        if hidden != message:
            record.msg, record.args = hidden, None
        return True


def hide_tokens() -> None:
    """Put a `TokenFilter` on discord.py's loggers (once)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, TokenFilter) for existing in logger.filters):
            logger.addFilter(TokenFilter())
