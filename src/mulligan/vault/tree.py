"""The list of a state's chunk ids, stored as a tree of small nodes.

A flat list of every page's id is itself big (16 bytes a page). Cut into nodes
of FANOUT ids and named by their content, unchanged stretches of the list are
shared between snapshots like any other chunk: a snapshot's metadata cost
follows what changed, not the size of the database.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from .codec import ID_LEN

FANOUT = 64
_NODE = FANOUT * ID_LEN


def build(ids: bytes, store: Callable[[bytes], bytes]) -> tuple[bytes, int]:
    """Store the nodes of the tree over ``ids``; return (root id, depth)."""
    level = ids
    depth = 0
    while True:
        depth += 1
        nodes = [level[i : i + _NODE] for i in range(0, len(level), _NODE)] or [b""]
        parents = b"".join(store(n) for n in nodes)
        if len(nodes) == 1:
            return parents[:ID_LEN], depth
        level = parents


def expand_many(trees: dict, load_many: Callable[[list[bytes]], dict[bytes, bytes]]) -> dict:
    """The concatenated leaf ids under each of several trees ({key: (root, depth)}), read a
    level of all of them per ``load_many`` call: a caller paying per call (a lean vault's pass
    over its index objects) pays for the deepest tree's depth, not for every tree's."""
    levels = {k: [root] for k, (root, _depth) in trees.items()}
    left = {k: depth for k, (_root, depth) in trees.items()}
    while any(left.values()):
        need = list(dict.fromkeys(n for k, level in levels.items() if left[k] for n in level))
        got = load_many(need)
        for k, level in levels.items():
            if left[k]:
                level_bytes = b"".join(got[n] for n in level)
                levels[k] = [level_bytes[i : i + ID_LEN] for i in range(0, len(level_bytes), ID_LEN)]
                left[k] -= 1
    return {k: b"".join(level) for k, level in levels.items()}


def node_ids(root: bytes, depth: int, load: Callable[[bytes], bytes]) -> list[bytes]:
    """Every tree node id (not the leaves' chunk ids), for reachability checks."""
    out = []
    level = [root]
    for d in range(depth):
        out.extend(level)
        if d == depth - 1:
            break
        level_bytes = b"".join(load(n) for n in level)
        level = [level_bytes[i : i + ID_LEN] for i in range(0, len(level_bytes), ID_LEN)]
    return out


def reachable(trees: Iterable[tuple[bytes, int]],
              load_many: Callable[[list[bytes]], Iterator[tuple[bytes, bytes]]],
              batch: int = 1 << 14, counts: dict | None = None,
              leaves: Callable[[list[bytes]], None] | None = None) -> set[bytes]:
    """Every chunk id of the given (root, depth) trees: nodes and leaves.

    Trees of one database share most of their nodes (a snapshot rewrites only the nodes over
    the pages that changed), so the walk goes level by level over all trees at once and reads
    each distinct node once: the work follows the distinct nodes, not trees times pages. A node
    is identified with the depth below it, so the same bytes read at two depths are both
    followed. ``load_many`` yields (id, content) for the ids asked, ``batch`` at a time.
    ``counts``, when given, receives each tree's number of leaves, keyed by (root, depth)
    (inner nodes are kept for that; nodes over leaves, 64 times as many, only as a count).
    ``leaves``, when given, is handed each node's leaves instead (they are then not in the
    result: a check of a whole vault holds no second set of every page id)."""
    trees = set(trees)
    out: set[bytes] = set()
    todo: dict[int, set[bytes]] = {}
    inner: dict[tuple[bytes, int], bytes] = {}
    over_leaves: dict[bytes, int] = {}
    for root, depth in trees:
        todo.setdefault(depth, set()).add(root)
    for d in range(max(todo, default=0), 0, -1):
        level = todo.pop(d, set())
        out |= level
        below = todo.setdefault(d - 1, set()) if d > 1 else out
        ids = sorted(level)
        for i in range(0, len(ids), batch):
            for cid, data in load_many(ids[i : i + batch]):
                if d == 1 and leaves is not None:
                    leaves([data[j : j + ID_LEN] for j in range(0, len(data), ID_LEN)])
                else:
                    below.update(data[j : j + ID_LEN] for j in range(0, len(data), ID_LEN))
                if counts is not None:
                    if d > 1:
                        inner[(cid, d)] = bytes(data)
                    else:
                        over_leaves[cid] = len(data) // ID_LEN
    if counts is not None:
        memo: dict[tuple[bytes, int], int] = {}

        def count(node: bytes, d: int) -> int:
            if d == 1:
                return over_leaves[node]
            n = memo.get((node, d))
            if n is None:
                data = inner[(node, d)]
                n = memo[(node, d)] = sum(count(data[j : j + ID_LEN], d - 1) for j in range(0, len(data), ID_LEN))
            return n

        for root, depth in trees:
            counts[(root, depth)] = count(root, depth)
    return out
