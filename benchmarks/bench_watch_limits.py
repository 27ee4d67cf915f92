"""Two costs of `watch` that grow with the user's data (docs/capture.md, "Limits").

    python benchmarks/bench_watch_limits.py [--tables 3,100,1000] [--chunks 2000000]

1. After each poll that found commits the rollback detector reads the largest key of the
   rowid tables a commit may have moved (every table now and then), and looks at every
   table's path. For each table count: a database of that many tables, the watcher's tailer,
   a commit into one table, a poll, then the observation timed (median of 30).
2. The chunk index grows with the vault's history. `mulligan watch` is started on a small
   database over an empty vault and over one whose index objects name ``--chunks`` chunks
   (written directly: entries no pack holds), twice each (the second start looks the state
   the first captured up in the index), and its peak resident memory (VmHWM) once it
   captures is printed, with the bytes each chunk costs, and how long it took to start.
3. A restore over the same index: a 40 MB database snapshotted into a vault whose index also
   names ``--chunks`` chunks, restored into a new file (`restore --latest --to`) with the
   index loaded whole and read an object at a time (Vault.lean_if_large, forced each way), in
   turns, 4 times each: seconds and peak memory. Then `snapshot` of the same database, 300
   random rows updated before each, the same way.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import apsw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _setup import byte_compile  # noqa: E402

MULLIGAN = [sys.executable, "-m", "mulligan"]


def observe_ms(work: Path, tables: int) -> float:
    from mulligan.engines.sqlite.capture import Tailer

    db = work / f"t{tables}.db"
    conn = apsw.Connection(str(db))
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    with conn:
        for i in range(tables):
            conn.execute(f"CREATE TABLE t{i}(id INTEGER PRIMARY KEY AUTOINCREMENT, v BLOB)")
            conn.execute(f"INSERT INTO t{i}(v) VALUES (randomblob(100))")
    t = Tailer(str(db))
    t.open()
    t.poll()
    took = []
    for k in range(30):
        conn.execute(f"INSERT INTO t{k % tables}(v) VALUES (randomblob(100))")
        t.poll()
        t0 = time.perf_counter()
        t.observe()
        took.append(time.perf_counter() - t0)
    t.close()
    conn.close()
    return statistics.median(took) * 1000


def _project(proj: Path, rows_sql: str, snapshot: bool = False) -> dict:
    """A project at ``proj`` with a protected database "app" filled by ``rows_sql`` (and a
    snapshot of it): the environment to run Mulligan in."""
    proj.mkdir()
    env = dict(os.environ)
    env.pop("MULLIGAN_CONFIG", None)
    subprocess.run(MULLIGAN + ["init"], cwd=proj, check=True, capture_output=True, env=env)
    db = apsw.Connection(str(proj / "app.db"))
    db.execute("PRAGMA journal_mode=WAL").fetchall()
    with db:
        db.execute(rows_sql)
    db.close()
    cmds = [["protect", "app.db", "--name", "app", "--env", "production"]] + ([["snapshot", "app"]] if snapshot else [])
    for cmd in cmds:
        subprocess.run(MULLIGAN + cmd, cwd=proj, check=True, capture_output=True, env=env)
    return env


def _name_chunks(proj: Path, chunks: int) -> None:
    """Index objects of a million entries each naming ``chunks`` pages no pack holds."""
    from mulligan.vault.packs import ID_LEN, encode_index

    index = proj / ".mulligan" / "vault" / "index"
    index.mkdir(exist_ok=True)
    left = chunks
    while left:
        n = min(1_000_000, left)
        packs = [(os.urandom(ID_LEN), [(os.urandom(ID_LEN), 0, i * 1000, 900, 4096, 0) for i in range(2000)])
                 for _ in range(max(1, n // 2000))]
        (index / os.urandom(16).hex()).write_bytes(encode_index(packs))
        left -= n


def watch_peak_mb(work: Path, chunks: int) -> list[tuple[float, float]]:
    proj = work / f"v{chunks}"
    env = _project(proj, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('x')")
    _name_chunks(proj, chunks)
    out = []
    for run in ("first", "again"):  # again: over the state the first captured (looked up in the index)
        log = proj / f"watch-{run}.log"
        with open(log, "w") as err:
            t0 = time.monotonic()
            p = subprocess.Popen(MULLIGAN + ["watch", "app"], cwd=proj, stderr=err, stdout=subprocess.DEVNULL,
                                 env=env)
            try:
                end = time.time() + 300
                while "capturing" not in log.read_text():
                    assert p.poll() is None and time.time() < end, log.read_text()
                    time.sleep(0.02)
                started = time.monotonic() - t0
                time.sleep(1.0)
                with open(f"/proc/{p.pid}/status") as fh:
                    hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
            finally:
                p.terminate()
                p.wait(60)
        out.append((hwm / 1024, started))
    return out


RESTORE = """
import sys
from mulligan.vault import vault
if sys.argv[1] == "whole":
    vault.LEAN_READ_INDEX_BYTES = 1 << 62  # the index loaded whole, as before it was read in part
elif sys.argv[1] == "lean":
    vault.LEAN_READ_INDEX_BYTES = 0
from mulligan.cli.main import run
sys.argv = ["mulligan", "-q", *sys.argv[2:]]
run()
"""


def commands_over_index(work: Path, chunks: int, rounds: int = 4) -> dict[str, list[tuple[float, float]]]:
    """A 40 MB database snapshotted into a vault whose index objects also name ``chunks`` chunks
    no pack holds, restored into a new file with the index loaded whole and read in part, in
    turns, then snapshotted again the same way (300 random rows updated before each):
    {command and way: [(seconds, peak MB)]}."""
    proj = work / f"r{chunks}"
    env = _project(proj, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); "
                         "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 120000) "
                         "INSERT INTO t(v) SELECT randomblob(300) FROM n", snapshot=True)
    _name_chunks(proj, chunks)
    script = proj / "restore.py"
    script.write_text(RESTORE)
    out: dict[str, list[tuple[float, float]]] = {}
    for k in range(rounds * 2):
        for how in (("whole", "lean") if k % 2 == 0 else ("lean", "whole")):
            if k < rounds:
                target = proj / f"{how}-{k}.db"
                cmd, key = ["restore", "app", "--latest", "--to", str(target)], f"restore --to, index {how}"
            else:
                target, key = None, f"snapshot, index {how}"
                cmd = ["snapshot", "app"]
                db = apsw.Connection(str(proj / "app.db"))
                with db:
                    db.execute("UPDATE t SET v = randomblob(300) WHERE id IN "
                               "(SELECT abs(random()) % 120000 + 1 FROM t LIMIT 300)")
                db.close()
            t0 = time.monotonic()
            p = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, str(script), how, *cmd], cwd=proj,
                               capture_output=True, text=True, env=env)
            took = time.monotonic() - t0
            assert p.returncode == 0, p.stderr
            out.setdefault(key, []).append((took, int(p.stderr.strip().splitlines()[-1]) / 1024))
            if target is not None:
                target.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", default="3,100,1000")
    ap.add_argument("--chunks", type=int, default=2_000_000)
    a = ap.parse_args()
    byte_compile()
    with tempfile.TemporaryDirectory(prefix="bench-limits-") as d:
        work = Path(d)
        print("| tables | detector's observation after a commit (median of 30) |")
        print("|---|---|")
        for n in (int(x) for x in a.tables.split(",") if x):
            print(f"| {n:,} | {observe_ms(work, n):.3f} ms |")
        base = watch_peak_mb(work, 0)
        big = watch_peak_mb(work, a.chunks)
        print()
        print("| chunks named by the vault's index | watch started | peak resident memory once capturing "
              "| seconds until capturing |")
        print("|---|---|---|---|")
        for n, runs in ((0, base), (a.chunks, big)):
            for (mb, secs), (mb0, _s0), run in zip(runs, base, ("first", "again, over its last state")):
                per = f" ({(mb - mb0) * 1048576 / n:.0f} bytes a chunk)" if n else ""
                print(f"| {n:,} | {run} | {mb:.0f} MB{per} | {secs:.2f} |")
        if os.path.exists("/usr/bin/time"):
            print()
            print("| chunks named by the vault's index | command, index | seconds: median (each) | peak MB |")
            print("|---|---|---|---|")
            for n in (0, a.chunks):
                for how, runs in commands_over_index(work, n).items():
                    each = ", ".join(f"{t:.2f}" for t, _ in runs)
                    print(f"| {n:,} | {how} | {statistics.median(t for t, _ in runs):.2f} ({each}) "
                          f"| {max(m for _, m in runs):.0f} |")


if __name__ == "__main__":
    main()
