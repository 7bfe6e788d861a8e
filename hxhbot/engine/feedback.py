"""What members say about the answers, in one SQLite file: verdicts, corrections and their review."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

FEEDBACK_TABLE = """CREATE TABLE {name} (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    guild_id INTEGER,
    channel_id INTEGER,
    message_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    picture_sha256 TEXT NOT NULL,
    picture_url TEXT NOT NULL,
    answer TEXT NOT NULL,
    score REAL NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('right', 'wrong')),
    correction TEXT,
    review TEXT NOT NULL CHECK (review IN ({reviews})),
    reviewed_by INTEGER,
    reviewed_at TEXT,
    UNIQUE (message_id, picture_sha256, user_id)
)"""
PENDING_INDEX = "CREATE INDEX feedback_pending ON feedback (id) WHERE review = 'pending'"
# A kept picture goes once no correction of it waits for review (reviewed, or expired after CORRECTION_RETENTION_DAYS).
UNNEEDED_PICTURES = (
    "DELETE FROM pictures WHERE sha256 NOT IN (SELECT picture_sha256 FROM feedback WHERE review = 'pending')"
)

# One tuple of statements per schema version; version n is reached by running MIGRATIONS[n - 1].
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        FEEDBACK_TABLE.format(name="feedback", reviews="'none', 'pending', 'approved', 'rejected'"),
        PENDING_INDEX,
        "CREATE TABLE pictures (sha256 TEXT PRIMARY KEY, data BLOB NOT NULL)",
    ),
    (  # 'expired': unreviewed for CORRECTION_RETENTION_DAYS, its picture deleted
        FEEDBACK_TABLE.format(name="feedback_v2", reviews="'none', 'pending', 'approved', 'rejected', 'expired'"),
        "INSERT INTO feedback_v2 SELECT * FROM feedback",
        "DROP TABLE feedback",
        "ALTER TABLE feedback_v2 RENAME TO feedback",
        PENDING_INDEX,
        UNNEEDED_PICTURES,  # those of corrections reviewed before pictures were deleted after review
    ),
)


class FeedbackError(RuntimeError):
    """A feedback database that cannot be used; `str()` says why in one line."""


@dataclass(frozen=True)
class Verdict:
    """One member's verdict on one answer."""

    guild_id: int | None
    channel_id: int | None
    message_id: int
    user_id: int
    picture_sha256: str
    picture_url: str
    answer: str
    score: float
    right: bool
    correction: str | None = None  # who it is instead; None after "Right", or "Wrong" with "Someone else"


@dataclass(frozen=True)
class Correction:
    """A pending correction with its picture, as /review shows it."""

    id: int
    created_at: str
    guild_id: int | None
    user_id: int
    picture_sha256: str
    picture_url: str
    answer: str
    correction: str
    data: bytes


class FeedbackStore:
    """The feedback database: WAL, synchronous=FULL, every call on one thread of its own."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="hxhbot-feedback")

    @classmethod
    def open(cls, path: str | Path) -> FeedbackStore:
        """Open (creating or migrating) the database at `path`."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a commit survives power loss, not only kill -9
            db.execute("PRAGMA foreign_keys=ON")
            migrate(db)
        except (OSError, sqlite3.Error) as error:
            raise FeedbackError(f"The feedback database {path} cannot be used: {error}") from error
        return cls(db)

    async def call(self, method: Callable[..., T], *args: object) -> T:
        """Run one of this store's methods on its own thread, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, partial(method, *args))

    def close(self) -> None:
        """Finish pending calls and close the database."""
        self._thread.shutdown(wait=True)
        self._db.close()

    def record(self, verdict: Verdict, data: bytes | None = None) -> bool:
        """Store a verdict (and, for a correction, the picture); False if this member already gave one."""
        review = "pending" if not verdict.right and verdict.correction else "none"
        with _transaction(self._db):
            inserted = self._db.execute(
                "INSERT INTO feedback (created_at, guild_id, channel_id, message_id, user_id, picture_sha256,"
                " picture_url, answer, score, verdict, correction, review)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    _now(),
                    verdict.guild_id,
                    verdict.channel_id,
                    verdict.message_id,
                    verdict.user_id,
                    verdict.picture_sha256,
                    verdict.picture_url,
                    verdict.answer,
                    verdict.score,
                    "right" if verdict.right else "wrong",
                    verdict.correction,
                    review,
                ),
            ).rowcount
            if inserted and review == "pending" and data is not None:
                self._db.execute(
                    "INSERT OR IGNORE INTO pictures (sha256, data) VALUES (?, ?)", (verdict.picture_sha256, data)
                )
        return bool(inserted)

    def next_pending(self, after: int = 0) -> Correction | None:
        """The oldest pending correction with an id above `after`, or None."""
        row = self._db.execute(
            "SELECT f.id, f.created_at, f.guild_id, f.user_id, f.picture_sha256, f.picture_url, f.answer,"
            " f.correction, p.data FROM feedback f JOIN pictures p ON p.sha256 = f.picture_sha256"
            " WHERE f.review = 'pending' AND f.id > ? ORDER BY f.id LIMIT 1",
            (after,),
        ).fetchone()
        return Correction(*row) if row else None

    def pending_count(self) -> int:
        """How many corrections wait for review."""
        return self._db.execute("SELECT count(*) FROM feedback WHERE review = 'pending'").fetchone()[0]

    def resolve(self, correction: Correction, approved: bool, reviewer: int) -> int:
        """Approve or reject a correction, with every pending one naming the same character for that picture; the
        picture is deleted once no other correction of it waits."""
        with _transaction(self._db):
            resolved = self._db.execute(
                "UPDATE feedback SET review = ?, reviewed_by = ?, reviewed_at = ?"
                " WHERE review = 'pending' AND picture_sha256 = ? AND correction = ?",
                (
                    "approved" if approved else "rejected",
                    reviewer,
                    _now(),
                    correction.picture_sha256,
                    correction.correction,
                ),
            ).rowcount
            self._db.execute(UNNEEDED_PICTURES)
        return resolved

    def expire(self, days: int, now: float | None = None) -> int:
        """Mark the corrections waiting for review longer than `days` expired and delete their pictures; how many."""
        cutoff = _now((time.time() if now is None else now) - days * 86400)
        with _transaction(self._db):
            expired = self._db.execute(
                "UPDATE feedback SET review = 'expired', reviewed_at = ? WHERE review = 'pending' AND created_at < ?",
                (_now(), cutoff),
            ).rowcount
            self._db.execute(UNNEEDED_PICTURES)
        return expired

    def verdicts(self) -> dict[str, tuple[int, int]]:
        """For each character answered, how many verdicts said right and how many wrong (all time)."""
        rows = self._db.execute(
            "SELECT answer, sum(verdict = 'right'), sum(verdict = 'wrong') FROM feedback GROUP BY answer"
        ).fetchall()
        return {answer: (right, wrong) for answer, right, wrong in rows}

    def corrections(self) -> list[tuple[int, str, str | None, str]]:
        """Every correction: id, picture checksum, character named and review state (for tests and audits)."""
        return self._db.execute(
            "SELECT id, picture_sha256, correction, review FROM feedback WHERE verdict = 'wrong' ORDER BY id"
        ).fetchall()


def migrate(db: sqlite3.Connection) -> int:
    """Bring the schema to the latest version (`PRAGMA user_version`); the version reached. Each step reads the
    version inside its own write transaction, so processes opening a new database at once migrate it once."""
    while True:
        with _transaction(db):
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise FeedbackError(
                    f"it was written by a newer hxhbot (schema {version}, this one knows {len(MIGRATIONS)})"
                )
            if version == len(MIGRATIONS):
                return version
            for statement in MIGRATIONS[version]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version + 1}")


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error) on an autocommit connection."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _now(seconds: float | None = None) -> str:
    """The current UTC time (or `seconds` since the epoch), ISO 8601."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
