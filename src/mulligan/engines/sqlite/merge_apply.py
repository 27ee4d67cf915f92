"""Running a recovery merge against the live database, and writing it out as SQL.

The apply takes the write lock (``BEGIN IMMEDIATE``), plans again from what
CURRENT holds at that moment (the plan shown earlier may be stale: users kept
writing), writes, raises the counters, then checks foreign keys and integrity
and rolls everything back on any failure the merge caused. The lock is held
only for the lookups of the keys LOST touched and the writes: LOST's changes
were read before.

Foreign-key enforcement is switched off before the transaction begins (the
pragma is a no-op inside one), so no cascade fires while rows are replayed;
triggers are off unless asked for (there is no pragma for that, it is a
connection setting: ``SQLITE_DBCONFIG_ENABLE_TRIGGER``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import quote

import apsw

from ...errors import DatabaseBusy, GuardRefused, IntegrityError, MulliganError
from . import merge_record as record
from .merge import plan_merge
from .merge_model import MergePlan, Write
from .merge_diff import LostChanges
from .merge_schema import q, read_schema
from .sqltext import sql_literal as literal


@dataclass
class ApplyResult:
    plan: MergePlan  # the plan as recomputed under the write lock, and applied
    lock_seconds: float
    check_seconds: float
    triggers_enabled: bool
    preexisting_fk_violations: list[dict] = field(default_factory=list)


def open_current(path: str, *, readonly: bool, busy_ms: int = 5000) -> apsw.Connection:
    if readonly:
        conn = apsw.Connection(
            "file:" + quote(str(path)) + "?mode=ro",
            flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI,
        )
    else:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
    conn.setbusytimeout(busy_ms)
    return conn


def begin_immediate(conn: apsw.Connection, busy_ms: int) -> None:
    """``BEGIN IMMEDIATE``, tried again about every half millisecond until ``busy_ms`` passed
    (then ``apsw.BusyError``). SQLite's own busy handler backs off to 100 ms sleeps, and an
    application committing back to back takes the write lock again within microseconds of
    each commit: polled that seldom, the lock was never found free in 5 s in one run of six
    (tests/test_recover_live.py)."""
    conn.setbusytimeout(0)
    deadline = time.monotonic() + busy_ms / 1000
    try:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except apsw.BusyError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.0005)
    finally:
        conn.setbusytimeout(busy_ms)


def plan_on_file(current_path: str, lost: LostChanges) -> MergePlan:
    """Plan against CURRENT in one read transaction; nothing is written."""
    conn = open_current(current_path, readonly=True)
    try:
        conn.execute("BEGIN")
        try:
            plan = plan_merge(conn, lost)
            plan.already_applied = record.find(conn, lost.fingerprint())
            return plan
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


def applied_before(current_path: str, lost: LostChanges) -> dict | None:
    """When these lost changes were merged into CURRENT already: {applied_at, writes, ...}, else None."""
    conn = open_current(current_path, readonly=True)
    try:
        return record.find(conn, lost.fingerprint())
    finally:
        conn.close()


def already_applied_error(current_path: str, prior: dict) -> GuardRefused:
    return GuardRefused(
        f"these lost changes were already merged into {current_path} at {prior['applied_at']} "
        f"({prior['writes']} writes, {prior['remapped']} remapped)",
        unchanged="nothing was written",
        hint="applying again would write the remapped rows a second time; "
        "to start over, undo the first merge, or pass --again if that is really meant",
    )


def apply_on_file(
    current_path: str,
    lost: LostChanges,
    *,
    triggers: bool = False,
    busy_ms: int = 5000,
    again: bool = False,
    accept: Callable[[MergePlan], None] | None = None,
) -> ApplyResult:
    """Plan again under the write lock and apply, in one transaction.

    Refused when these lost changes were applied to CURRENT before, unless
    ``again``. ``accept`` sees the recomputed plan before anything is written
    and may raise to refuse it (the transaction is then rolled back).
    """
    fingerprint = lost.fingerprint()
    conn = open_current(current_path, readonly=False, busy_ms=busy_ms)
    try:
        conn.execute("PRAGMA foreign_keys = OFF")  # before BEGIN: inside a transaction it is a no-op
        conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 1 if triggers else 0)
        try:
            begin_immediate(conn, busy_ms)
        except apsw.BusyError:
            raise DatabaseBusy(
                f"{current_path} stayed locked by another writer for {busy_ms / 1000:g} s",
                unchanged="nothing was written",
                hint="try again; the app's transactions are usually short",
            ) from None
        locked_at = time.perf_counter()
        try:
            prior = record.find(conn, fingerprint)
            if prior is not None and not again:
                raise already_applied_error(current_path, prior)
            plan = plan_merge(conn, lost)
            plan.already_applied = prior
            if accept is not None:
                accept(plan)
            try:
                _write(conn, plan)
            except apsw.Error as exc:
                raise MulliganError(
                    f"writing the merge into {current_path} failed: {exc}",
                    unchanged="the transaction was rolled back; CURRENT is as it was",
                    hint="run the plan without --apply, review it (--sql-out), and check CURRENT's schema "
                    "against LOST's (a column CURRENT requires that LOST does not have?)",
                ) from None
            record.write(conn, fingerprint, plan)
            check_start = time.perf_counter()
            preexisting = _check(conn, plan)
            check_seconds = time.perf_counter() - check_start
            conn.execute("COMMIT")
        except BaseException:
            if not conn.getautocommit():
                conn.execute("ROLLBACK")
            raise
        lock_seconds = time.perf_counter() - locked_at
        return ApplyResult(plan, lock_seconds, check_seconds, triggers, preexisting)
    finally:
        conn.close()


def _write(conn: apsw.Connection, plan: MergePlan) -> None:
    for table, op, columns, batch in _batches(plan):
        pk = plan.pk[table]
        where = " AND ".join(f"{q(c)} = ?" for c in pk)
        if op == "delete" and not pk:
            for w in batch:
                conn.execute(_keyless_delete(table, w.values, w.count), tuple(w.values.values()))
        elif op == "delete":
            conn.executemany(f"DELETE FROM main.{q(table)} WHERE {where}", [w.key for w in batch])
        elif op == "insert":
            sql = f"INSERT INTO main.{q(table)} ({', '.join(q(c) for c in columns)}) VALUES ({', '.join('?' * len(columns))})"
            conn.executemany(sql, [tuple(w.values[c] for c in columns) for w in batch])
        else:
            sql = f"UPDATE main.{q(table)} SET {', '.join(f'{q(c)} = ?' for c in columns)} WHERE {where}"
            conn.executemany(sql, [tuple(w.values[c] for c in columns) + w.key for w in batch])
    for table, seq in plan.counters.items():
        conn.execute("UPDATE main.sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (seq, table))
        if conn.changes() == 0:
            conn.execute("INSERT INTO main.sqlite_sequence(name, seq) VALUES (?, ?)", (table, seq))


def _keyless_delete(table: str, row: dict, count: int, *, script: bool = False) -> str:
    """Delete ``count`` copies of a whole row from a table without a key."""
    if script:  # literal values, no schema name: for the reviewable script
        match = " AND ".join(f"{q(c)} IS {literal(v)}" for c, v in row.items())
        t = q(table)
    else:
        match = " AND ".join(f"{q(c)} IS ?" for c in row)
        t = f"main.{q(table)}"
    return f"DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} WHERE {match} LIMIT {int(count)})"


def _batches(plan: MergePlan):
    """Consecutive writes of the same table, kind and column set, in plan order."""
    batch: list[Write] = []
    sig = None
    for w in plan.writes:
        s = (w.table, w.op, tuple(w.values))
        if s != sig and batch:
            yield sig[0], sig[1], sig[2], batch
            batch = []
        sig = s
        batch.append(w)
    if batch:
        yield sig[0], sig[1], sig[2], batch


def _check(conn: apsw.Connection, plan: MergePlan) -> list[dict]:
    """foreign_key_check and integrity_check of what the merge touched; raise on a failure it caused.

    A violation is the merge's when the referring row is one it wrote, or the
    row referred to is one it deleted or whose referred-to columns it changed.
    Others were there before: returned, not fatal.
    """
    written: dict[str, list] = {}
    gone: dict[str, list] = {}  # parent table -> (rows as they were, columns the merge changed or None: all)
    for w in plan.writes:
        if w.op in ("insert", "update"):
            written.setdefault(w.table, []).append(w)
        if w.op in ("update", "delete"):
            gone.setdefault(w.table, []).append((w.old, set(w.values) if w.op == "update" else None))
    schema = read_schema(conn, "main")
    tables = set(written)
    for parent in gone:
        tables |= {fk.child for fk in schema.children_of(parent)}
    ours, theirs = [], []
    for table in sorted(t for t in tables if t in schema.tables):
        info = schema.tables[table]
        fks: dict[int, list] = {}
        for fkid, seq, parent, frm, to, *_ in conn.execute(f"PRAGMA main.foreign_key_list({q(table)})"):
            fks.setdefault(fkid, []).append((seq, frm, to))
        mine = {tuple(w.values.get(c) for c in (info.pk or info.columns)) for w in written.get(table, [])}
        for child, rowid, parent, fkid in conn.execute(f"PRAGMA main.foreign_key_check({q(table)})").fetchall():
            v = {"table": child, "rowid": rowid, "parent": parent}
            if rowid is None:  # a WITHOUT ROWID child: cannot be told apart, so it counts
                ours.append(v)
                continue
            pairs = sorted(fks.get(fkid, []))
            cols = [frm for _, frm, _ in pairs]
            pinfo = schema.tables.get(parent)
            pcols = [to for _, _, to in pairs] if all(to for _, _, to in pairs) else (pinfo.pk if pinfo else [])
            full = dict(zip(info.columns, conn.execute(
                f"SELECT {', '.join(q(c) for c in info.columns)} FROM main.{q(table)} WHERE rowid = ?", (rowid,)
            ).fetchone()))
            ref = tuple(full[c] for c in cols)
            v["key"] = [full[c] for c in (info.pk or info.columns)]
            v["refers_to"] = list(ref)
            own_row = tuple(v["key"]) in mine
            lost_parent = any(
                (changed is None or set(pcols) & changed) and tuple(old.get(c) for c in pcols) == ref
                for old, changed in gone.get(parent, [])
            )
            (ours if own_row or lost_parent else theirs).append(v)
    if ours:
        raise IntegrityError(
            f"the merge would leave {len(ours)} row(s) referring to rows that do not exist "
            f"(first: {ours[0]})",
            unchanged="the transaction was rolled back; CURRENT is as it was",
            hint="run the plan without --apply and review its conflicts; report this as a bug if it persists",
            details={"violations": ours[:50]},
        )
    # Every table the merge wrote, with its indexes (the whole file would hold the write lock for as
    # long as the database is big; what the merge did not write, it cannot have damaged).
    problems = []
    for table in sorted({w.table for w in plan.writes} | ({"sqlite_sequence"} if plan.counters else set())):
        problems += [r[0] for r in conn.execute(f"PRAGMA main.integrity_check({q(table)})") if r[0] != "ok"]
    if problems:
        raise IntegrityError(
            f"integrity_check failed after the merge: {problems[0]}",
            unchanged="the transaction was rolled back; CURRENT is as it was",
            hint="check the database with 'PRAGMA integrity_check' before trying again",
            details={"problems": problems[:50]},
        )
    return theirs


# -- the reviewable SQL script ---------------------------------------------


def sql_script(plan: MergePlan, *, header: str = "", triggers: bool = False) -> str:
    """The plan as SQL, equivalent to the apply (run it with any SQLite client).

    SQL cannot switch triggers off; unless ``triggers``, the script drops the
    triggers of the tables it writes and creates them again before COMMIT
    (schema changes are transactional in SQLite, so nobody sees them gone).
    """
    out = []
    for line in header.splitlines():
        out.append(f"-- {line}".rstrip())
    out.append("-- Foreign-key enforcement must be off before the transaction, so no cascade fires.")
    out.append("PRAGMA foreign_keys = OFF;")
    out.append("BEGIN IMMEDIATE;")
    silenced = [] if triggers else [n for t in sorted(plan.triggers) for n in plan.triggers[t]]
    if silenced:
        out.append("-- Triggers must not fire during replay: dropped here, created again below.")
    for name in silenced:
        out.append(f"DROP TRIGGER {q(name)};")
    for w in plan.writes:
        where = " AND ".join(f"{q(c)} = {literal(v)}" for c, v in zip(plan.pk[w.table], w.key))
        if w.op == "delete" and not plan.pk[w.table]:
            out.append(_keyless_delete(w.table, w.values, w.count, script=True) + ";")
        elif w.op == "delete":
            out.append(f"DELETE FROM {q(w.table)} WHERE {where};")
        elif w.op == "update":
            sets = ", ".join(f"{q(c)} = {literal(v)}" for c, v in w.values.items())
            out.append(f"UPDATE {q(w.table)} SET {sets} WHERE {where};")
        else:
            cols = ", ".join(q(c) for c in w.values)
            vals = ", ".join(literal(v) for v in w.values.values())
            out.append(f"INSERT INTO {q(w.table)} ({cols}) VALUES ({vals});")
    for table, seq in plan.counters.items():
        out.append(
            f"INSERT INTO sqlite_sequence(name, seq) SELECT {literal(table)}, 0 "
            f"WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = {literal(table)});"
        )
        out.append(f"UPDATE sqlite_sequence SET seq = max(seq, {seq}) WHERE name = {literal(table)};")
    for name in silenced:
        out.append(plan.trigger_sql[name].rstrip(";") + ";")
    out.append("-- Must return no rows before COMMIT; otherwise ROLLBACK.")
    out.append("PRAGMA foreign_key_check;")
    out.append("COMMIT;")
    return "\n".join(out) + "\n"
