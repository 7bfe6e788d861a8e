"""Disjoint sets: joins carry through other items; items never joined stay apart."""

from hxhbot.engine.disjoint_sets import DisjointSets


def test_joins_are_transitive_and_others_stay_apart() -> None:
    sets = DisjointSets(6)
    sets.join(1, 0)
    sets.join(3, 2)
    sets.join(2, 1)  # 0 · 1 · 2 · 3 now one set, through 1 and 2
    roots = [sets.root(item) for item in range(6)]
    assert len({roots[0], roots[1], roots[2], roots[3]}) == 1
    assert len({roots[0], roots[4], roots[5]}) == 3


def test_a_long_chain_ends_in_one_root() -> None:
    sets = DisjointSets(2000)
    for item in range(1, 2000):
        sets.join(item, item - 1)
    assert {sets.root(item) for item in range(2000)} == {sets.root(0)}
