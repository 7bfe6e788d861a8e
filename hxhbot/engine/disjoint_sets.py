"""Disjoint sets (union-find): which items a relation joins, directly or through others."""

from __future__ import annotations


class DisjointSets:
    """Items 0 … count − 1, each alone until joined; `root` names the set an item is in."""

    def __init__(self, count: int) -> None:
        self._parent = list(range(count))

    def root(self, item: int) -> int:
        """The item that names `item`'s set."""
        parent = self._parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def join(self, item: int, other: int) -> None:
        """Merge `item`'s set into `other`'s (named by `other`'s root from now on)."""
        self._parent[self.root(item)] = self.root(other)
