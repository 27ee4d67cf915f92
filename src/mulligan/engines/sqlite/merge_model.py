"""The plan of a recovery merge: what it writes, where each lost row goes, what a human decides."""

from __future__ import annotations

from dataclasses import dataclass, field

# Conflict kinds
CELL = "cell"  # the same cell changed differently on both sides
UPDATE_DELETED = "update-deleted"  # LOST updated a row CURRENT deleted
DELETE_UPDATED = "delete-updated"  # LOST deleted a row CURRENT updated
NATURAL_KEY = "natural-key"  # the same natural key inserted on both sides with different content
UNIQUE = "unique"  # a UNIQUE value of a LOST row already exists in CURRENT
PARENT_CONFLICT = "parent-conflict"  # the row refers to a lost row that is not replayed
MISSING_PARENT = "missing-parent"  # the row refers to a row CURRENT deleted
REFERENCED = "referenced"  # LOST changed a value CURRENT's rows refer to (a foreign key to a natural column)

# Row outcomes
REPLAYED = "replayed"  # written at its own key
REMAPPED = "remapped"  # written at a new key
MERGED = "merged"  # an update merged with CURRENT's changes to other columns of the row
PRESENT = "present"  # CURRENT already has it exactly (or already deleted it)
CONFLICT = "conflict"
SKIPPED = "skipped"  # a delete of a parent whose children were written after the mistake


@dataclass
class Conflict:
    table: str
    kind: str
    key: tuple  # the row's key in LOST
    reason: str
    columns: dict[str, dict] = field(default_factory=dict)  # column -> {base, lost, current}
    rows: dict[str, dict | None] = field(default_factory=dict)  # lost / current / base rows


@dataclass
class Outcome:
    """Where one lost change ended up."""

    table: str
    change: str  # insert | update | delete (what LOST did)
    lost_key: tuple
    status: str
    key: tuple | None  # the row's key in CURRENT after the merge (None: not there)
    detail: str = ""


@dataclass
class Write:
    table: str
    op: str  # insert | update | delete
    key: tuple  # key in CURRENT
    values: dict = field(default_factory=dict)  # insert: every column; update: the changed ones
    count: int = 1  # delete from a keyless table: how many copies of the row (``values``)
    old: dict = field(default_factory=dict)  # update: the row as CURRENT had it; delete: as BASE had it


@dataclass
class TablePlan:
    name: str
    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    remapped: int = 0
    conflicts: int = 0
    skipped: int = 0
    present: int = 0


@dataclass
class MergePlan:
    tables: dict[str, TablePlan]
    writes: list[Write]  # in the order they run: deletes (children first), updates, inserts (parents first)
    key_map: dict[str, dict[tuple, tuple]]  # table -> lost key -> new key (only keys that changed)
    conflicts: list[Conflict]
    outcomes: list[Outcome]
    counters: dict[str, int]  # table -> sqlite_sequence value to end with (only raised ones)
    skipped_tables: dict[str, str]
    triggers: dict[str, list[str]]  # triggers on tables the merge writes to
    pk: dict[str, list[str]]  # key columns of every merged table
    trigger_sql: dict[str, str] = field(default_factory=dict)  # every trigger of CURRENT: name -> SQL
    # Tables with an INTEGER PRIMARY KEY but no AUTOINCREMENT: no counter to raise, new rows take max+1.
    no_counter: list[str] = field(default_factory=list)
    # These lost changes were applied to CURRENT before: {applied_at, writes, remapped, conflicts}
    already_applied: dict | None = None
    warnings: list[str] = field(default_factory=list)


class Allocator:
    """Hands out new surrogate keys above everything any state used."""

    def __init__(self, floor: dict[str, int]):
        self.floor = dict(floor)
        self.next = {t: v + 1 for t, v in floor.items()}

    def take(self, table: str) -> int:
        k = self.next[table]
        self.next[table] = k + 1
        return k

    def snapshot(self) -> dict[str, int]:
        return dict(self.next)

    def restore(self, state: dict[str, int]) -> None:
        self.next = dict(state)


def same(a, b) -> bool:
    """Equal as SQLite compares stored values (1 == 1.0), NULL equal only to NULL."""
    if type(a) is not type(b) and (a is None or b is None):
        return False
    return a == b


def same_row(a: dict, b: dict, cols) -> bool:
    return all(same(a[c], b[c]) for c in cols)


def fmt_key(key: tuple) -> str:
    return ", ".join(repr(v) for v in key) if len(key) != 1 else repr(key[0])


def sort_key(key: tuple):
    return tuple((0, v) if isinstance(v, (int, float)) else (1, str(v)) for v in key)
