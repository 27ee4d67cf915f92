"""diff against SQLite's sqldiff, side by side in one run, command start-up included.

1. Two files: one 1,000,000-row table, 1,000 changed rows (updates, deletes,
   and inserts into gaps, spread over the whole key range). `mulligan diff A B`
   (text, json and sql) against `sqldiff --primarykey A B` (the PyPI wrapper of
   SQLite's sqldiff.c, run as its own process). Target: <= 0.5x sqldiff.
2. Two vault snapshots of a 10-table database (100,000 rows a table), one
   table changed (1,000 rows). `mulligan diff NAME SNAP1 SNAP2` (both states
   read from the vault in place) against sqldiff on the two plain files.
   Target: <= 1x sqldiff. Also shown: the first snapshot against the live
   database (its pages hashed to compare them with the snapshot's chunk ids).

Warm cache; every command is run once untimed, then --repeat times, the runs of the
commands interleaved; medians.

    python benchmarks/bench_diff.py [--rows 1000000] [--changes 1000] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import apsw

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from mulligan import config as cfg  # noqa: E402
from mulligan.ops import setup as setup_ops  # noqa: E402
from mulligan.ops.snapshot import take_snapshot  # noqa: E402
from mulligan.ops.workspace import Workspace  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _setup import byte_compile  # noqa: E402

PY = sys.executable
SQLDIFF = [PY, "-c", "import sys, sqldiff; sys.stdout.write(sqldiff.diff(sys.argv[1], sys.argv[2], primary_key=True))"]
MULLIGAN = [PY, "-m", "mulligan"]
TABLE = "CREATE TABLE {t}(id INTEGER PRIMARY KEY, username TEXT NOT NULL, email TEXT, score INTEGER, created_at TEXT)"


def fill(conn: apsw.Connection, table: str, rows: int) -> None:
    """Even ids 2..2*rows, so inserts can land in the gaps all over the key range."""
    conn.execute(TABLE.format(t=table))
    with conn:
        conn.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?)",
                         ((2 * i, f"{table}-user{i}", f"user{i}@{table}.example.com", i % 997, f"2026-11-{1 + i % 20:02d} 10:00:00")
                          for i in range(1, rows + 1)))


def change(path: str, table: str, rows: int, changes: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    conn = apsw.Connection(path)
    with conn:
        for n, i in enumerate(rng.sample(range(1, rows + 1), changes)):
            if n % 10 < 4:
                conn.execute(f"UPDATE {table} SET score = score + 1, email = 'changed' WHERE id = ?", (2 * i,))
            elif n % 10 < 7:
                conn.execute(f"DELETE FROM {table} WHERE id = ?", (2 * i,))
            else:
                conn.execute(f"INSERT INTO {table} VALUES (?, 'new', NULL, 0, '2026-11-21 10:00:00')", (2 * i + 1,))
    conn.close()


def _once(cmd: list[str]) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr.decode()}")
    return time.perf_counter() - t


def timed(commands: dict[str, list[str]], repeat: int) -> dict[str, float]:
    """Median wall time of each command; runs are interleaved so a busy machine hurts all alike."""
    for cmd in commands.values():
        _once(cmd)  # warm the page cache and the interpreter's files
    runs: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(repeat):
        for k, cmd in commands.items():
            runs[k].append(_once(cmd))
    return {k: statistics.median(v) for k, v in runs.items()}


def two_files(d: str, rows: int, changes: int, repeat: int) -> dict:
    a, b = os.path.join(d, "a.db"), os.path.join(d, "b.db")
    conn = apsw.Connection(a)
    fill(conn, "t", rows)
    conn.close()
    shutil.copyfile(a, b)
    change(b, "t", rows, changes)
    out = {"rows": rows, "changed_rows": changes, "file_mb": round(os.path.getsize(a) / 2**20, 1)}
    commands = {"sqldiff_s": SQLDIFF + [a, b]}
    for fmt in ("text", "json", "sql"):
        commands[f"mulligan_{fmt}_s"] = MULLIGAN + ["diff", a, b, "--format", fmt]
    commands["mulligan_no_page_skipping_s"] = [
        PY, "-c", "import sys; from mulligan.ops.diff import diff_states as d; d(sys.argv[1], sys.argv[2], compare_pages=False)", a, b]
    commands["mulligan_startup_s"] = MULLIGAN + ["diff", "--help"]
    out.update(timed(commands, repeat))
    out["ratio_sql"] = out["mulligan_sql_s"] / out["sqldiff_s"]
    out["ratio_text"] = out["mulligan_text_s"] / out["sqldiff_s"]
    return out


def two_snapshots(d: str, rows: int, changes: int, repeat: int, tables: int = 10) -> dict:
    db = os.path.join(d, "app.db")
    conn = apsw.Connection(db)
    for i in range(tables):
        fill(conn, f"t{i}", rows // tables)
    conn.close()
    config_path = os.path.join(d, "mulligan.toml")
    setup_ops.init(cfg.Path(config_path))
    ws = Workspace.open(cfg.load(cfg.Path(config_path)))
    setup_ops.protect(ws, db, "app", "production")
    ws = Workspace.open(cfg.load(cfg.Path(config_path)))
    target = ws.target("app")
    first = take_snapshot(ws, target)
    before = os.path.join(d, "before.db")
    shutil.copyfile(db, before)
    change(db, "t3", rows // tables, changes)
    second = take_snapshot(ws, target)
    after = os.path.join(d, "after.db")
    shutil.copyfile(db, after)
    out = {"tables": tables, "rows": rows, "changed_rows": changes}
    out.update(timed({"sqldiff_files_s": SQLDIFF + [before, after],
                      "mulligan_snapshots_s": MULLIGAN + ["--config", config_path, "diff", "app", first.id, second.id],
                      "mulligan_snapshot_live_s": MULLIGAN + ["--config", config_path, "diff", "app", first.id, "live"],
                      "mulligan_files_s": MULLIGAN + ["diff", before, after]}, repeat))
    out["ratio"] = out["mulligan_snapshots_s"] / out["sqldiff_files_s"]
    return out


def main() -> None:
    byte_compile()
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-diff-") as d:
        os.makedirs(os.path.join(d, "files"))
        os.makedirs(os.path.join(d, "vault"))
        res = {"two_files": two_files(os.path.join(d, "files"), args.rows, args.changes, args.repeat),
               "two_snapshots": two_snapshots(os.path.join(d, "vault"), args.rows, args.changes, args.repeat)}
    if args.json:
        print(json.dumps(res, indent=2))
        return
    f, s = res["two_files"], res["two_snapshots"]
    print(f"two files, {f['rows']:,} rows ({f['file_mb']} MiB), {f['changed_rows']:,} changed rows; median of {args.repeat}")
    print(f"  sqldiff --primarykey          {f['sqldiff_s']:.3f} s")
    for fmt in ("text", "json", "sql"):
        print(f"  mulligan diff --format {fmt:<5}  {f[f'mulligan_{fmt}_s']:.3f} s   {f[f'mulligan_{fmt}_s'] / f['sqldiff_s']:.2f}x")
    print(f"  (in-process, no page skipping  {f['mulligan_no_page_skipping_s']:.3f} s; mulligan diff --help {f['mulligan_startup_s']:.3f} s)")
    print(f"  target <= 0.5x: {'met' if f['ratio_sql'] <= 0.5 and f['ratio_text'] <= 0.5 else 'NOT met'}")
    print(f"two vault snapshots, {s['tables']} tables, {s['rows']:,} rows, one table with {s['changed_rows']:,} changed rows")
    print(f"  sqldiff on the two files      {s['sqldiff_files_s']:.3f} s")
    print(f"  mulligan diff NAME S1 S2      {s['mulligan_snapshots_s']:.3f} s   {s['ratio']:.2f}x")
    print(f"  mulligan diff NAME S1 live    {s['mulligan_snapshot_live_s']:.3f} s   {s['mulligan_snapshot_live_s'] / s['sqldiff_files_s']:.2f}x")
    print(f"  mulligan diff on the files    {s['mulligan_files_s']:.3f} s")
    print(f"  target <= 1x: {'met' if s['ratio'] <= 1 else 'NOT met'}")


if __name__ == "__main__":
    main()
