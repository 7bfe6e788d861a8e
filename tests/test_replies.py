"""How answers and file names look, within what Discord accepts."""

from __future__ import annotations

from hxhbot.answers import Identification, Outcome, Sighting
from hxhbot.detector import Box
from hxhbot.index import CharacterMatch
from hxhbot.replies import DESCRIPTION_LENGTH, TITLE_LENGTH, answer, characters_embed
from hxhbot.wording import SHOWN_NAME, code


def _picture(*names: str) -> Identification:
    """A picture with one confidently named character per name, side by side."""
    width = 1 / len(names)
    return Identification([
        Sighting(Box(number * width, 0.0, (number + 1) * width, 0.5), [CharacterMatch(name, 0.9, 0.8, f"{name}.jpg")])
        for number, name in enumerate(names)])


def test_the_names_of_several_characters_are_the_title() -> None:
    reply = answer(_picture("Gon Freecss", "Killua Zoldyck"), 0.7, 0.2)
    assert reply.outcome is Outcome.NAMED and reply.embed.title == "Gon Freecss, Killua Zoldyck"
    assert reply.embed.description == "**1.** Gon Freecss — 90%\n**2.** Killua Zoldyck — 90%"


def test_a_character_not_named_beside_a_named_one_is_offered_behind_the_button() -> None:
    picture = _picture("Gon Freecss", "Killua Zoldyck")
    unsure = Sighting(picture.sightings[1].box, [CharacterMatch("Killua Zoldyck", 0.5, 0.4, "k.jpg")])
    reply = answer(Identification([picture.sightings[0], unsure]), 0.7, 0.2)
    assert reply.outcome is Outcome.NAMED and reply.unnamed and reply.embed.title == "Gon Freecss"
    assert reply.embed.footer.text == "Show candidates reveals my guesses for those I can't name."
    watched = answer(Identification([picture.sightings[0], unsure]), 0.7, 0.2, only_named=True)
    assert watched.embed.description == "**1.** Gon Freecss — 90%" and not watched.embed.footer.text
    assert not answer(picture, 0.7, 0.2).unnamed


def test_a_title_of_long_names_is_cut_to_what_discord_accepts() -> None:
    names = [letter * 100 for letter in "ABC"]  # the longest names a gallery takes
    reply = answer(_picture(*names), 0.7, 0.2)
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
