"""Settings: defaults, parsing, and one clear line naming a bad or missing setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hxhbot.config import DISCORD_API, ConfigError, Settings, load_settings


def test_defaults() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.gallery_dir == Path("data/gallery") and settings.model_dir == Path("model")
    assert settings.discord_api_base == DISCORD_API and settings.top_k == 5


def test_values_are_parsed() -> None:
    settings = load_settings(
        {
            "DISCORD_TOKEN": "abc",
            "TOP_K": "3",
            "WATCH_CHANNEL_IDS": "1, 2 3",
            "OWNER_IDS": "42",
            "DEV_GUILD_ID": "7",
            "MAX_IMAGE_BYTES": "2048",
            "DISCORD_API_BASE": "http://127.0.0.1:9/api/v10/",
            "CONFIDENCE_THRESHOLD": "0.25",
            "LOG_LEVEL": "debug",
            "GALLERY_DIR": "g",
            "USER_INSTALL": "1",
            "DECODE_MEMORY_BYTES": str(64 << 20),
            "DECODE_WAIT_SECONDS": "2.5",
            "MODEL_THREADS": "2",
        },
        require_token=True,
    )
    assert settings.top_k == 3 and settings.watch_channel_ids == {1, 2, 3} and settings.owner_ids == {42}
    assert settings.dev_guild_id == 7 and settings.max_image_bytes == 2048
    assert settings.discord_api_base == "http://127.0.0.1:9/api/v10" and settings.log_level == "DEBUG"
    assert settings.confidence_threshold == 0.25 and settings.gallery_dir == Path("g")
    assert settings.model_threads == 2 and load_settings({}).model_threads == 2
    assert settings.user_install and not load_settings({}).user_install
    assert settings.decode_memory_bytes == 64 << 20 and settings.decode_wait_seconds == 2.5


@pytest.mark.parametrize(
    "name,value",
    [
        ("TOP_K", "many"),
        ("TOP_K", "0"),
        ("WATCH_CHANNEL_IDS", "12,abc"),
        ("DEV_GUILD_ID", "-5"),
        ("MAX_IMAGE_BYTES", "1e9x"),
        ("DISCORD_API_BASE", "ftp://x"),
        ("CORRECTION_RETENTION_DAYS", "0"),
        ("DISCORD_API_BASE", "http://discord.example.com/api/v10"),
        ("DISCORD_API_BASE", "http://127.0.0.1.example.com/api"),
        ("CONFIDENCE_THRESHOLD", "2"),
        ("LOG_LEVEL", "loud"),
        ("WORKERS", "0"),
        ("MODEL_THREADS", "0"),
        ("SHARD_COUNT", "0"),
        ("SHARD_IDS", "3-1"),
        ("SHARD_IDS", "a"),
        ("COLLECT_ON_START", "maybe"),
        ("COLLECT_BASE_URL", "api.jikan.moe"),
        ("USER_INSTALL", "yes please"),
        ("DECODE_MEMORY_BYTES", "1000"),
        ("DECODE_WAIT_SECONDS", "-1"),
    ],
)
def test_malformed_setting_is_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({name: value})
    assert str(raised.value).startswith(f"{name}=") and "\n" not in str(raised.value)


def test_the_token_goes_over_https_or_to_this_machine_only() -> None:
    for base in (
        "https://discord.example.com/api",
        "http://127.0.0.1:9/api",
        "http://127.8.0.1/api",
        "http://localhost:9/api",
        "http://[::1]:9/api",
    ):
        assert load_settings({"DISCORD_API_BASE": base}).discord_api_base == base
    with pytest.raises(ConfigError, match="^DISCORD_API_BASE=.*https://"):
        load_settings({"DISCORD_API_BASE": "http://10.0.0.5/api"})


def test_the_token_is_not_in_the_settings_repr() -> None:
    settings = load_settings({"DISCORD_TOKEN": "MTIz.secret-token.part"})
    assert settings.discord_token == "MTIz.secret-token.part"
    assert "secret-token" not in repr(settings) and "secret-token" not in str(settings)


def test_first_run_collection() -> None:
    assert load_settings({}).collect_on_start and load_settings({}).collect_base_url is None
    settings = load_settings(
        {"COLLECT_ON_START": "0", "COLLECT_BASE_URL": "http://127.0.0.1:9/v4/", "COLLECT_PER_CHARACTER": "3"}
    )
    assert not settings.collect_on_start and settings.collect_base_url == "http://127.0.0.1:9/v4"
    assert settings.collect_per_character == 3


def test_shards() -> None:
    assert load_settings({}).shard_count is None and load_settings({}).shard_ids is None
    settings = load_settings({"SHARD_COUNT": "8", "SHARD_IDS": "0-2, 5 4"})
    assert settings.shard_count == 8 and settings.shard_ids == (0, 1, 2, 4, 5)
    with pytest.raises(ConfigError, match="^SHARD_IDS needs SHARD_COUNT"):
        load_settings({"SHARD_IDS": "0"})
    with pytest.raises(ConfigError, match="^SHARD_IDS=2,3 is not valid: shard ids go from 0 to SHARD_COUNT - 1"):
        load_settings({"SHARD_COUNT": "3", "SHARD_IDS": "2-3"})


def test_missing_token_is_named_only_when_required() -> None:
    assert load_settings({}).discord_token == ""
    with pytest.raises(ConfigError, match="DISCORD_TOKEN"):
        load_settings({}, require_token=True)


def test_env_example_documents_every_setting() -> None:
    example = (Path(__file__).parent.parent / ".env.example").read_text()
    documented = {line.split("=", 1)[0].lstrip("# ").strip() for line in example.splitlines() if "=" in line}
    source = (Path(__file__).parent.parent / "hxhbot" / "config.py").read_text()
    import re

    used = set(re.findall(r'read\("([A-Z_]+)"', source))
    assert used and used <= documented, used - documented


def test_a_serving_process_keeps_openblas_on_one_thread_unless_the_owner_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hxhbot.runtime_env import prepare

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    prepare()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    prepare()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "4"
