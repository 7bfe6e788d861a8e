"""Owner training from the running bot: `python -m training.train` in a child process at low CPU priority, then
the new model swapped in with its index (`SearchService.swap_model`) when it ranks the held-out pictures better."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hxhbot.config import Settings
from hxhbot.engine.indexing import BuildSummary
from hxhbot.engine.search import ReindexError, SearchService
from hxhbot.errors import UserError

log = logging.getLogger(__name__)
VIEW_CACHE = ".view-cache"
NICENESS = 10  # the child's CPU priority: below the bot's, which keeps answering meanwhile
STAGES = {"views": "reading the pictures", "training": "training", "saving": "saving", "index": "indexing the gallery"}
Status = Callable[[str, int, int, float | None], None]  # (stage, done, total, seconds left or None)


class TrainingBusyError(UserError):
    """A training run or an index rebuild is already going."""


class TrainingError(UserError):
    """A training run failed; the serving model is still in place."""


@dataclass
class TrainingOutcome:
    """What a training run did: `swapped` when the new model now serves."""

    swapped: bool
    summary: dict  # training/owner.py's OwnerSummary, as written
    index: BuildSummary | None = None

    def describe(self) -> str:
        """A few sentences for the owner."""
        summary = self.summary
        change = (summary["trained_top1"] - summary["start_top1"]) * 100
        checked = (
            f"{summary['held_out']} held-out pictures of {summary['characters']} characters were ranked first "
            f"{summary['trained_top1']:.0%} of the time by the trained model and {summary['start_top1']:.0%} by "
            f"the serving one ({change:+.1f} points)"
        )
        if not self.swapped:
            return f"{checked}: training did not rank clearly more of them first, so the serving model stays."
        index = f" Index rebuilt: {self.index.describe()}." if self.index else ""
        return f"{checked}: the trained model now serves ({summary['seconds'] / 60:.0f} min).{index}"


class OwnerTrainer:
    """Owner training for a search service: one run at a time per service (`SearchService.training`)."""

    def __init__(self, settings: Settings, search: SearchService) -> None:
        self.settings, self.search = settings, search

    @property
    def view_cache(self) -> Path:
        """Where the child keeps the bottom maps of the gallery's views (`training.view_cache`): beside MODEL_DIR, so
        that the next run computes only the pictures added since; delete it at will."""
        return self.settings.model_dir.resolve().parent / VIEW_CACHE

    def check_free(self) -> None:
        """Raise `TrainingBusyError` while a training run or an index rebuild is going."""
        if self.search.training:
            raise TrainingBusyError("A training run is already going: its reply shows how far it is.")
        if self.search.reindexing:
            raise TrainingBusyError("The index is being rebuilt right now: run /train once it is done.")

    def command(self, out: Path) -> list[str]:
        """The child's command line: the one owner command, from the serving model, progress as JSON lines."""
        settings = self.settings
        return [sys.executable, "-m", "training.train", "--data", str(settings.gallery_dir), "--out", str(out),
                "--start", str(settings.model_dir), "--cache", str(self.view_cache), "--json-progress"]  # fmt: skip

    async def train(self, status: Status | None = None) -> TrainingOutcome:
        """Train, and swap the new model in when it is better; raise `TrainingBusyError` or `TrainingError`."""
        self.check_free()
        report = status or (lambda stage, done, total, left: None)
        self.search.training = True  # /reindex and another /train wait for this run to finish
        parent = self.settings.model_dir.resolve().parent
        try:
            staged = Path(tempfile.mkdtemp(prefix=f".{self.settings.model_dir.name}.train-", dir=parent))
        except OSError as error:
            self.search.training = False
            raise TrainingError(f"Training needs a folder beside {self.settings.model_dir}: {error}") from error
        try:
            summary = await self._run(self.command(staged / "model"), report)
            if summary["kept"] != "trained":
                return TrainingOutcome(False, summary)
            try:
                built = await self.search.swap_model(
                    staged / "model", lambda done, total: report("index", done, total, None)
                )
            except ReindexError as error:
                raise TrainingError(f"The trained model could not be put in service: {error}") from error
            return TrainingOutcome(True, summary, built)
        finally:
            self.search.training = False
            shutil.rmtree(staged, ignore_errors=True)

    async def _run(self, command: list[str], report: Status) -> dict:
        """Run the child at low priority, relaying its progress; its summary, or `TrainingError` saying why not."""
        log.info("owner training: %s", " ".join(command))
        child = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=lambda: os.nice(NICENESS),  # one system call between fork and exec: no lock taken
        )
        errors: deque[str] = deque(maxlen=20)
        summary: dict | None = None

        async def relay() -> None:
            nonlocal summary
            assert child.stdout is not None
            async for raw in child.stdout:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if "summary" in line:
                    summary = line["summary"]
                else:
                    report(line["stage"], line["done"], line["total"], line["left"])

        async def keep_errors() -> None:
            assert child.stderr is not None
            async for raw in child.stderr:
                text = raw.decode(errors="replace").rstrip()
                if text:
                    errors.append(text)
                    log.debug("training: %s", text)

        try:
            await asyncio.gather(relay(), keep_errors())
            code = await child.wait()
        except asyncio.CancelledError:  # the bot is closing: the child must not outlive it
            child.kill()
            await child.wait()
            raise
        if code != 0 or summary is None:
            said = [line.split("error: ", 1)[-1] for line in errors if "error" in line.lower()]
            reason = said[-1] if said else (errors[-1] if errors else "")
            log.error("owner training failed (exit %s): %s", code, "\n".join(errors))
            raise TrainingError(f"Training failed ({reason or f'exit {code}'}); the serving model stays in place.")
        return summary
