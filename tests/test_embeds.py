"""How answers and file names look, within what Discord accepts."""

from __future__ import annotations

from hxhbot.discord.embeds import (
    DESCRIPTION_LENGTH,
    EMBEDS_LENGTH,
    TITLE_LENGTH,
    candidates_embed,
    card,
    characters_embed,
    fitted,
)
from hxhbot.engine.detector import Box
from hxhbot.engine.identification import Identification, Outcome, Sighting
from hxhbot.engine.index import CharacterMatch
from hxhbot.wording import SHOWN_NAME, code


def _picture(*names: str) -> Identification:
    """A picture with one confidently named character per name, side by side."""
    width = 1 / len(names)
    return Identification(
        [
            Sighting(
                Box(number * width, 0.0, (number + 1) * width, 0.5), [CharacterMatch(name, 0.9, 0.8, f"{name}.jpg")]
            )
            for number, name in enumerate(names)
        ]
    )


def test_the_names_of_several_characters_are_the_title() -> None:
    reply = card(_picture("Gon Freecss", "Killua Zoldyck"), 0.7, 0.2)
    assert reply.outcome is Outcome.NAMED and reply.embed.title == "Gon Freecss, Killua Zoldyck"
    assert reply.embed.description == "**1.** Gon Freecss — 90%\n**2.** Killua Zoldyck — 90%"


def test_a_character_not_named_beside_a_named_one_is_offered_behind_the_button() -> None:
    picture = _picture("Gon Freecss", "Killua Zoldyck")
    unsure = Sighting(picture.sightings[1].box, [CharacterMatch("Killua Zoldyck", 0.5, 0.4, "k.jpg")])
    reply = card(Identification([picture.sightings[0], unsure]), 0.7, 0.2)
    assert reply.outcome is Outcome.NAMED and reply.unnamed and reply.embed.title == "Gon Freecss"
    assert reply.embed.footer.text == "Show candidates reveals my guesses for those I can't name."
    watched = card(Identification([picture.sightings[0], unsure]), 0.7, 0.2, only_named=True)
    assert watched.embed.description == "**1.** Gon Freecss — 90%" and not watched.embed.footer.text
    assert not card(picture, 0.7, 0.2).unnamed


def test_a_title_of_long_names_is_cut_to_what_discord_accepts() -> None:
    names = [letter * 100 for letter in "ABC"]  # the longest names a gallery takes
    reply = card(_picture(*names), 0.7, 0.2)
    assert len(reply.embed.title) == TITLE_LENGTH and reply.embed.title.endswith("…")
    assert reply.embed.title.startswith(f"{names[0]}, {names[1]}, C")
    assert all(name in reply.embed.description for name in names)  # every name whole in its line


def test_a_file_name_is_shown_as_one_short_code_span() -> None:
    assert code("gon.jpg") == "`gon.jpg`"
    shown = code("@everyone `look` " + "x" * 100)
    assert shown.count("`") == 2 and len(shown) == SHOWN_NAME + 2 and shown.endswith("…`")


def test_a_long_list_of_characters_ends_with_how_many_more() -> None:
    counts = {f"{number:03d} " + "x" * 96: 25 for number in range(300)}
    embed = characters_embed(counts)
    lines = embed.description.splitlines()
    assert len(embed.description) <= DESCRIPTION_LENGTH and embed.title == "300 characters, 7500 gallery images"
    assert lines[-1] == f"… and {300 - len(lines[:-1])} more" and lines[0] == f"000 {'x' * 96} — 25"
    assert characters_embed({"Gon": 4}).description == "Gon — 4"


def test_ten_pictures_of_long_names_fit_in_one_message() -> None:
    names = [f"{number:02d} " + "x" * 97 for number in range(25)]  # the longest names, TOP_K at its most
    matches = [CharacterMatch(name, 0.5, 0.4, f"{name}.jpg") for name in names]
    picture = Identification([Sighting(Box(n / 3, 0, (n + 1) / 3, 1), matches) for n in range(3)])
    revealed = fitted([candidates_embed(picture, f"Image {n}") for n in range(1, 11)])
    answers = fitted([card(picture, 0.4, 0.2, label=f"Image {n}").embed for n in range(1, 11)])
    for embeds in (revealed, answers):
        assert sum(map(len, embeds)) <= EMBEDS_LENGTH and [e.author.name for e in embeds][-1] == "Image 10"
        assert all(len(field.value) >= 1 for embed in embeds for field in embed.fields)
    assert [field.name for field in revealed[0].fields] == ["1.", "2.", "3."]
    assert revealed[0].fields[0].value.startswith(names[0]) and revealed[0].fields[0].value.endswith("…")
    assert answers[0].description.startswith(f"**1.** {names[0]}")
    few = [card(picture, 0.4, 0.2).embed]
    assert fitted(few)[0].description == card(picture, 0.4, 0.2).embed.description  # within the limit: untouched
