"""`mulligan verify` and `prune` over a vault of many chunks: seconds and peak memory.

    python benchmarks/bench_verify.py [--rows 200000] [--snapshots 6] [--rounds 3]

A database of 512-byte pages (--rows rows of 200 random bytes), every row rewritten before
each of --snapshots snapshots, so that nearly every page of every snapshot is a chunk of its
own (600,000 chunks at the defaults, 270 MiB of packs). Then `verify`, --rounds times, each
its own process: seconds and peak resident memory (VmHWM), and the bytes each chunk costs
beyond an empty vault's verify; the same for `prune --keep-last` keeping every point (it
still walks every tree and reads every index object). The anchor is `sha256sum` of every vault object: reading and
hashing everything once, what any check that reads everything costs at least.
"""

from __future__ import annotations

import argparse
import os
import shutil
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


def _env() -> dict:
    env = dict(os.environ)
    env.pop("MULLIGAN_CONFIG", None)
    return env


def make_vault(proj: Path, rows: int, snapshots: int) -> None:
    proj.mkdir()
    db = proj / "app.db"
    conn = apsw.Connection(str(db))
    conn.execute("PRAGMA page_size=512")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    with conn:
        conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                     "INSERT INTO t(v) SELECT randomblob(200) FROM n", (rows,))
    conn.close()
    env = _env()
    subprocess.run(MULLIGAN + ["init"], cwd=proj, check=True, capture_output=True, env=env)
    subprocess.run(MULLIGAN + ["protect", str(db), "--name", "app", "--env", "staging"], cwd=proj, check=True,
                   capture_output=True, env=env)
    for _ in range(snapshots):
        if rows:
            conn = apsw.Connection(str(db))
            with conn:
                conn.execute("UPDATE t SET v = randomblob(200)")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        subprocess.run(MULLIGAN + ["snapshot", "app"], cwd=proj, check=True, capture_output=True, env=env)


def timed(proj: Path, *cmd: str) -> tuple[float, float, dict]:
    """(seconds, peak MB, the command's JSON)."""
    import json

    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", *MULLIGAN, "--json", *cmd], cwd=proj, capture_output=True,
                       text=True, env=_env())
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    return took, int(p.stderr.strip().splitlines()[-1]) / 1024, json.loads(p.stdout)


def read_all(proj: Path) -> float:
    t0 = time.monotonic()
    files = [str(f) for f in (proj / ".mulligan" / "vault").rglob("*") if f.is_file()]
    subprocess.run(["sha256sum", *files], stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--snapshots", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if not os.path.exists("/usr/bin/time"):
        sys.exit("needs /usr/bin/time (GNU time) for peak memory")
    byte_compile()
    work = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        empty, full = work / "empty", work / "full"
        make_vault(empty, 0, 1)
        make_vault(full, a.rows, a.snapshots)
        cat = statistics.median(read_all(full) for _ in range(a.rounds))
        print("| command | vault | chunks | seconds: median (each) | peak MB | bytes a chunk | "
              "sha256sum of every object |")
        print("|---|---|---|---|---|---|---|")
        for cmd in (["verify"], ["prune", "app", "--keep-last", str(a.snapshots + 1)]):
            base = [timed(empty, *cmd) for _ in range(a.rounds)]
            runs = [timed(full, *cmd) for _ in range(a.rounds)]
            chunks = timed(full, "verify")[2]["chunks"]
            mb0, mb = statistics.median(m for _, m, _ in base), statistics.median(m for _, m, _ in runs)
            secs = statistics.median(t for t, _, _ in runs)
            print(f"| {cmd[0]} | empty | | {statistics.median(t for t, _, _ in base):.2f} | {mb0:.0f} | | |")
            print(f"| {cmd[0]} | {a.snapshots} snapshots | {chunks:,} | {secs:.2f} "
                  f"({', '.join(f'{t:.2f}' for t, _, _ in runs)}) | {mb:.0f} | "
                  f"{(mb - mb0) * 1048576 / max(chunks, 1):.0f} | {cat:.2f} s ({secs / cat:.1f}x) |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
