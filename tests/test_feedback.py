"""The feedback store: schema and migrations, verdicts, review, and no acknowledged correction lost to kill -9."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hxhbot.engine.feedback import MIGRATIONS, FeedbackError, FeedbackStore, Verdict

pytestmark = pytest.mark.timeout(120)
WRITER = """
import sys
from hxhbot.engine.feedback import FeedbackStore, Verdict
store = FeedbackStore.open(sys.argv[1])
for number in range(1_000_000):
    verdict = Verdict(1, 2, number, 42, f"{number:064x}", f"https://cdn/{number}.png", "Gon Freecss", 0.9,
                      right=False, correction="Killua Zoldyck")
    store.record(verdict, b"picture %d" % number)
    print(number, flush=True)  # acknowledged: the commit has returned
"""


def _verdict(
    message_id: int = 1,
    user_id: int = 7,
    right: bool = False,
    correction: str | None = "Kurapika",
    answer: str = "Gon Freecss",
    sha: str = "a" * 64,
) -> Verdict:
    return Verdict(10, 20, message_id, user_id, sha, "https://cdn/x.png", answer, 0.8, right, correction)


def test_schema_is_created_with_wal_and_a_version(tmp_path: Path) -> None:
    store = FeedbackStore.open(tmp_path / "data" / "feedback.sqlite3")
    store.close()
    db = sqlite3.connect(tmp_path / "data" / "feedback.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} == {
        "feedback",
        "pictures",
    }


def test_an_open_migrates_only_what_is_missing_and_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite3"
    store = FeedbackStore.open(path)
    assert store.record(_verdict(), b"jpeg")
    store.close()
    store = FeedbackStore.open(path)  # already current: nothing re-run, nothing lost
    assert len(store.corrections()) == 1
    store.close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.commit()
    db.close()
    with pytest.raises(FeedbackError, match="newer hxhbot"):
        FeedbackStore.open(path)


def test_verdicts_corrections_and_review(tmp_path: Path) -> None:
    store = FeedbackStore.open(tmp_path / "feedback.sqlite3")
    assert store.record(_verdict(user_id=1, right=True, correction=None))
    assert not store.record(_verdict(user_id=1, right=False))  # one verdict per member and answer
    assert store.record(_verdict(user_id=2), b"jpeg")
    assert store.record(_verdict(user_id=3, message_id=2), b"jpeg")  # the same picture corrected again
    assert store.record(_verdict(user_id=4, correction=None))  # "someone else": nothing to review
    assert store.verdicts() == {"Gon Freecss": (1, 3)}
    assert store.pending_count() == 2
    pending = store.next_pending()
    assert pending is not None and pending.correction == "Kurapika" and pending.data == b"jpeg"
    assert store.next_pending(after=pending.id).id > pending.id
    assert store.resolve(pending, approved=True, reviewer=99) == 2  # both pending rows for that picture
    assert store.next_pending() is None and store.pending_count() == 0
    assert [row[3] for row in store.corrections()] == ["approved", "approved", "none"]
    store.close()


def _pictures(path: Path) -> list[str]:
    """The checksums of the pictures the database keeps."""
    return sorted(sha for (sha,) in sqlite3.connect(path).execute("SELECT sha256 FROM pictures"))


def test_a_picture_is_deleted_once_no_correction_of_it_waits_for_review(tmp_path: Path) -> None:
    store = FeedbackStore.open(tmp_path / "feedback.sqlite3")
    assert store.record(_verdict(user_id=1, sha="a" * 64), b"first")
    assert store.record(_verdict(user_id=2, sha="a" * 64, correction="Killua Zoldyck"), b"first")
    assert store.record(_verdict(user_id=3, sha="b" * 64), b"second")
    first = store.next_pending()
    assert first is not None and store.resolve(first, approved=True, reviewer=99) == 1
    assert _pictures(tmp_path / "feedback.sqlite3") == ["a" * 64, "b" * 64]  # Killua's correction of it still waits
    killua = store.next_pending()
    assert killua is not None and killua.correction == "Killua Zoldyck"
    store.resolve(killua, approved=False, reviewer=99)
    assert _pictures(tmp_path / "feedback.sqlite3") == ["b" * 64]
    store.close()


def test_unreviewed_pictures_expire_after_the_retention_period(tmp_path: Path) -> None:
    store = FeedbackStore.open(tmp_path / "feedback.sqlite3")
    assert store.record(_verdict(user_id=1), b"jpeg")
    assert store.expire(30, now=time.time() + 29 * 86400) == 0  # within the period: kept
    assert store.pending_count() == 1 and _pictures(tmp_path / "feedback.sqlite3") == ["a" * 64]
    assert store.expire(30, now=time.time() + 31 * 86400) == 1
    assert store.pending_count() == 0 and store.next_pending() is None
    assert _pictures(tmp_path / "feedback.sqlite3") == [] and [row[3] for row in store.corrections()] == ["expired"]
    store.close()


def test_a_first_schema_database_is_migrated_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(";".join(MIGRATIONS[0]) + ";PRAGMA user_version = 1")
    row = "'2026-01-01T00:00:00Z', 1, 2, {0}, 7, '{1}', 'u', 'Gon Freecss', 0.5, 'wrong', 'Kurapika', '{2}'"
    for number, (sha, review) in enumerate([("a" * 64, "approved"), ("b" * 64, "pending")]):
        db.execute(
            "INSERT INTO feedback (created_at, guild_id, channel_id, message_id, user_id, picture_sha256, picture_url,"
            f" answer, score, verdict, correction, review) VALUES ({row.format(number, sha, review)})"
        )
        db.execute("INSERT INTO pictures VALUES (?, ?)", (sha, b"jpeg"))
    db.commit()
    db.close()
    store = FeedbackStore.open(path)
    assert [(sha[0], review) for _, sha, _, review in store.corrections()] == [("a", "approved"), ("b", "pending")]
    assert _pictures(path) == ["b" * 64]  # the reviewed one's picture, kept by an earlier hxhbot, is gone
    assert store.expire(1) == 1 and store.corrections()[1][3] == "expired"
    store.close()


async def test_calls_run_off_the_event_loop(tmp_path: Path) -> None:
    import threading

    store = FeedbackStore.open(tmp_path / "feedback.sqlite3")
    thread = await store.call(lambda: threading.current_thread().name)
    assert thread.startswith("hxhbot-feedback")
    assert await store.call(store.record, _verdict(), b"jpeg")
    store.close()


def test_every_acknowledged_correction_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite3"
    FeedbackStore.open(path).close()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent
    )
    acknowledged = []
    assert writer.stdout is not None
    for line in writer.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) == 200:
            break
    writer.send_signal(signal.SIGKILL)  # mid-write: it is busy committing the next ones
    writer.wait()
    acknowledged += [int(line) for line in writer.stdout.read().split()]  # acknowledged before it died
    assert writer.returncode == -signal.SIGKILL
    store = FeedbackStore.open(path)
    stored = {int(sha, 16) for _, sha, _, _ in store.corrections()}
    assert set(acknowledged) <= stored
    assert all(store.next_pending(after=n) is not None for n in range(0, len(acknowledged), 50))
    store.close()


def _open_at_once(path: str, start: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue) -> None:
    """Open (creating) the database the moment every other process is ready too; report how it went."""
    start.wait()
    try:
        FeedbackStore.open(path).close()
        results.put("ok")
    except FeedbackError as error:
        results.put(str(error))


def test_forty_processes_creating_the_database_at_once_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(40), context.Queue()
    path = str(tmp_path / "feedback.sqlite3")
    openers = [context.Process(target=_open_at_once, args=(path, start, results)) for _ in range(40)]
    for opener in openers:
        opener.start()
    outcomes = [results.get(timeout=60) for _ in openers]
    for opener in openers:
        opener.join(10)
    assert outcomes == ["ok"] * 40
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_correction_menu_offers_the_closest_characters_first_and_fits_discord() -> None:
    from hxhbot.discord.feedback_ui import MENU_SIZE, candidates
    from hxhbot.engine.identification import Identification, Sighting
    from hxhbot.engine.index import CharacterMatch

    ranked = Identification(
        [Sighting(None, [CharacterMatch(name, 0.1, 0.5, "x.jpg") for name in ("Gon", "Hisoka", "Illumi")])]
    )
    known = [f"Character {n:02d}" for n in range(40)] + ["Hisoka", "Gon"]
    names = candidates(ranked, "Gon", known)
    assert names[:3] == ["Hisoka", "Illumi", "Character 00"] and "Gon" not in names
    assert len(names) == MENU_SIZE - 1 == len(set(names))  # room left for "Someone else"
