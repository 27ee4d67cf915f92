"""Long histories: how listing, restore --at, status, prune and verify scale with restore points.

Part 1, many restore points (``--points``, default 20,000: two weeks of a snapshot a minute):
one real snapshot of a small database, then as many more restore points of the same state,
one minute apart (each a copy of the first manifest under a new id and time, which is what a
snapshot of an unchanged database stores). Timed with the target's catalog
(``catalogs/<target>``) and without it (the manifests read one by one).

Part 2, many real snapshots (``--snapshots``, default 100, of a ``--rows`` database with
``--changes`` rows updated between each): prune that removes nothing and verify, both of
which walk every restore point's tree.

Each figure is the median of ``--repeat`` runs of the real command (a new process each).

    python benchmarks/bench_history.py [--points 20000] [--snapshots 100] [--rows 300000]
                                       [--changes 200] [--repeat 3] [--json]
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
from datetime import datetime, timedelta, timezone
from pathlib import Path

import apsw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _setup import byte_compile  # noqa: E402

MULLIGAN = [sys.executable, "-m", "mulligan"]
ENV = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")}


def run(cwd: Path, *args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(MULLIGAN + ["-q", *args], cwd=cwd, env=ENV, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def timed(cwd: Path, repeat: int, *args: str, after=None) -> float:
    out = []
    for _ in range(repeat):
        out.append(run(cwd, *args))
        if after:
            after()
    return round(statistics.median(out), 3)


def project(work: Path, rows: int) -> Path:
    db = work / "app.db"
    conn = apsw.Connection(str(db))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE events(id INTEGER PRIMARY KEY, kind TEXT, payload TEXT)")
    with conn:
        for i in range(rows):
            conn.execute("INSERT INTO events(kind, payload) VALUES (?, ?)", (f"k{i % 17}", os.urandom(100).hex()))
    conn.close()
    run(work, "init")
    run(work, "protect", str(db), "--name", "app", "--env", "production")
    return db


def many_points(work: Path, points: int, repeat: int) -> dict:
    project(work, 2000)
    run(work, "snapshot", "app")
    folder = next((work / ".mulligan" / "vault" / "snapshots").iterdir())
    first = json.loads(next(folder.iterdir()).read_text())
    t0 = datetime.now(timezone.utc) - timedelta(minutes=points)
    for i in range(points - 1):
        m = dict(first, id=os.urandom(8).hex(),
                 time=(t0 + timedelta(minutes=i)).isoformat(timespec="milliseconds").replace("+00:00", "Z"))
        (folder / m["id"]).write_text(json.dumps(m, sort_keys=True))
    middle = (t0 + timedelta(minutes=points // 2, seconds=30)).isoformat(timespec="seconds").replace("+00:00", "Z")
    out = work / "restored.db"

    def rm_out():
        out.unlink(missing_ok=True)

    catalog = work / ".mulligan" / "vault" / "catalogs"
    res = {"points": points}
    res["prune_writing_the_catalog_s"] = round(run(work, "prune", "app", "--keep-within", "100000d"), 3)
    for label in ("with_catalog", "without_catalog"):
        if label == "without_catalog":
            shutil.rmtree(catalog, ignore_errors=True)
        res[label] = {
            "snapshots_json_s": timed(work, repeat, "snapshots", "app", "--json"),
            "snapshots_table_s": timed(work, repeat, "snapshots", "app"),
            "restore_at_s": timed(work, repeat, "restore", "app", "--at", middle, "--to", str(out), after=rm_out),
            "status_s": timed(work, repeat, "status", "--json"),
        }
    return res


def many_snapshots(work: Path, snapshots: int, rows: int, changes: int, repeat: int) -> dict:
    db = project(work, rows)
    conn = apsw.Connection(str(db))
    rnd = random.Random(1)
    t0 = time.perf_counter()
    for _ in range(snapshots):
        with conn:
            for _ in range(changes):
                conn.execute("UPDATE events SET payload = ? WHERE id = ?", (os.urandom(100).hex(), rnd.randint(1, rows)))
        run(work, "snapshot", "app")
    conn.close()
    return {
        "snapshots": snapshots, "rows": rows, "changes": changes,
        "db_mb": round(db.stat().st_size / 2**20, 1), "build_s": round(time.perf_counter() - t0, 1),
        "prune_nothing_removed_s": timed(work, repeat, "prune", "app", "--keep-within", "100000d"),
        "verify_s": timed(work, repeat, "verify", "app"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=20000)
    ap.add_argument("--snapshots", type=int, default=100)
    ap.add_argument("--rows", type=int, default=300000)
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    byte_compile()
    res = {}
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        res["many_points"] = many_points(Path(tmp) / "a", a.points, a.repeat)
        res["many_snapshots"] = many_snapshots(Path(tmp) / "b", a.snapshots, a.rows, a.changes, a.repeat)
    if a.json:
        print(json.dumps(res, indent=1))
        return
    mp, ms = res["many_points"], res["many_snapshots"]
    print(f"{mp['points']} restore points of one target (median of {a.repeat}):")
    print("| command | with the catalog | without |")
    print("|---|---|---|")
    for key, name in (("snapshots_json_s", "snapshots --json"), ("snapshots_table_s", "snapshots (table)"),
                      ("restore_at_s", "restore --at"), ("status_s", "status --json")):
        print(f"| {name} | {mp['with_catalog'][key]} s | {mp['without_catalog'][key]} s |")
    print(f"prune writing the catalog: {mp['prune_writing_the_catalog_s']} s")
    print(f"\n{ms['snapshots']} snapshots of a {ms['db_mb']} MiB database ({ms['changes']} rows changed between each; "
          f"built in {ms['build_s']} s):")
    print(f"prune removing nothing {ms['prune_nothing_removed_s']} s, verify {ms['verify_s']} s")


if __name__ == "__main__":
    main()
