"""`bot.py` as a process against the local fake Discord: clean refusals at start-up, a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fake_discord.server import EPHEMERAL, FakeDiscord

pytestmark = pytest.mark.timeout(600)  # start-up alone may take minutes on a loaded machine
ROOT = Path(__file__).parent.parent
STARTUP = 240.0  # seconds a bot process may take to import TensorFlow and load its model on a busy machine


class BotProcess:
    """`python bot.py` with its stderr read line by line as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, env: dict[str, str], cwd: Path) -> BotProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "bot.py"),
            cwd=cwd,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            async with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()

    async def wait_for_line(self, text: str, timeout: float = 60.0) -> str:
        """The first output line containing `text` (past or coming)."""
        find = lambda: next((line for line in self.lines if text in line), None)  # noqa: E731
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(find), timeout)
        return find()

    async def wait(self, timeout: float = STARTUP) -> tuple[int, str]:
        """The exit code and everything it printed."""
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await asyncio.wait_for(self._reader, 10)
        return code, "\n".join(self.lines)

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


@pytest.fixture
async def server():
    fake = FakeDiscord(heartbeat_interval_ms=5000, interaction_deadline=60.0)  # a busy machine slows the bot
    await fake.start()
    yield fake
    await fake.stop()


def _env(server: FakeDiscord, tmp_path: Path, **settings: str) -> dict[str, str]:
    return {
        **os.environ,
        "DISCORD_TOKEN": server.token,
        "DISCORD_API_BASE": server.api_base,
        "GALLERY_DIR": str(tmp_path / "no-gallery"),
        "INDEX_DIR": str(tmp_path / "index"),
        "COOLDOWN_SECONDS": "0",
        "LOG_LEVEL": "INFO",
        **settings,
    }


async def _refused_start(env: dict[str, str], cwd: Path) -> str:
    bot = await BotProcess.start(env, cwd)
    try:
        code, output = await bot.wait()
    finally:
        bot.kill()
    assert code == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1, output
    return errors[0]


def test_help_and_unknown_options_answer_at_once(tmp_path: Path) -> None:
    helped = subprocess.run(
        [sys.executable, str(ROOT / "bot.py"), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=STARTUP
    )
    assert helped.returncode == 0 and helped.stdout.startswith("usage: bot.py") and ".env.example" in helped.stdout
    refused = subprocess.run(
        [sys.executable, str(ROOT / "bot.py"), "--token", "x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=STARTUP,
    )
    assert refused.returncode == 2 and "unrecognized arguments: --token x" in refused.stderr


async def test_a_damaged_model_is_one_clear_line(server: FakeDiscord, model_dir: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "model"
    damaged.mkdir()
    (damaged / "config.json").write_bytes((model_dir / "config.json").read_bytes())
    (damaged / "model.keras").write_bytes((model_dir / "model.keras").read_bytes()[:4000])
    line = await _refused_start(_env(server, tmp_path, MODEL_DIR=str(damaged)), tmp_path)
    assert "cannot start:" in line and "model.keras cannot be loaded" in line and "retrain" in line


async def test_imagenet_weights_offline_is_one_clear_line(server: FakeDiscord, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".keras").mkdir(parents=True)  # an empty, writable Keras cache: it must download
    (tmp_path / "untrained").mkdir()
    env = _env(server, tmp_path, MODEL_DIR=str(tmp_path / "untrained"), HOME=str(home))
    env.pop("KERAS_HOME", None)
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        env[name] = "http://127.0.0.1:9"  # nothing listens there: the download fails at once, offline
    env["NO_PROXY"] = env["no_proxy"] = ""
    line = await _refused_start(env, tmp_path)
    assert "ImageNet weights of MobileNetV2 could not be downloaded" in line and "MODEL_DIR" in line


async def test_a_message_content_intent_left_off_is_one_clear_line(
    model_dir: Path, gallery: Path, tmp_path: Path
) -> None:
    server = FakeDiscord(heartbeat_interval_ms=5000, message_content_intent=False)
    await server.start()
    try:
        env = _env(
            server,
            tmp_path,
            MODEL_DIR=str(model_dir),
            GALLERY_DIR=str(gallery),
            WATCH_CHANNEL_IDS=str(server.channel_ids[1]),
        )
        line = await _refused_start(env, tmp_path)
    finally:
        await server.stop()
    assert "Message Content intent that WATCH_CHANNEL_IDS needs" in line and "Privileged Gateway Intents" in line


async def test_a_dev_guild_without_the_bot_is_one_clear_line(
    server: FakeDiscord, model_dir: Path, gallery: Path, tmp_path: Path
) -> None:
    env = _env(server, tmp_path, MODEL_DIR=str(model_dir), GALLERY_DIR=str(gallery), DEV_GUILD_ID="123456789012345678")
    line = await _refused_start(env, tmp_path)
    assert "DEV_GUILD_ID 123456789012345678" in line and "applications.commands" in line


async def test_sigterm_finishes_requests_in_flight_then_exits_0(
    server: FakeDiscord, model_dir: Path, gallery: Path, tmp_path: Path
) -> None:
    env = _env(
        server,
        tmp_path,
        MODEL_DIR=str(model_dir),
        GALLERY_DIR=str(gallery),
        DOWNLOAD_TIMEOUT="600",
        CONFIDENCE_THRESHOLD="0",
    )
    bot = await BotProcess.start(env, tmp_path)
    try:
        await server.wait_until_ready(timeout=STARTUP)
        picture = (gallery / "Kurapika" / "01.jpg").read_bytes()
        slow = server.add_attachment(picture, "slow.jpg", "image/jpeg", body_delay=2.0)
        stuck = server.add_attachment(picture, "stuck.jpg", "image/jpeg", body_delay=3600.0)
        finishing = await server.send_slash_command("whois", {"image": slow})
        hanging = await server.send_slash_command("whois", {"image": stuck})
        for interaction in (finishing, hanging):
            assert (await server.wait_for_callback(interaction.token, timeout=60)).json["type"] == 5  # deferred
        bot.process.send_signal(signal.SIGTERM)
        await bot.wait_for_line("shutting down: finishing 2 requests")
        late = await server.send_slash_command("whois", {"image": slow})
        refusal = (await server.wait_for_callback(late.token, timeout=60)).json
        assert refusal["data"]["flags"] & EPHEMERAL and "restarting" in refusal["data"]["content"]
        answer = await server.wait_for_followup(finishing.token, timeout=60)
        assert answer.json["embeds"][0]["title"] == "Kurapika"
        code, output = await bot.wait(timeout=120)
    finally:
        bot.kill()
    assert code == 0, output
    assert "1 requests were still running after 10 s" in output and "shut down cleanly" in output
    assert "Traceback" not in output, output
