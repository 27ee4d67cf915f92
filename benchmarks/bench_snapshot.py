"""Snapshot and restore against `sqlite3 .backup` and `cp`, measured side by side in one run.

    python benchmarks/bench_snapshot.py [--rows 1000000] [--dir DIR] [--repeat 3]

Builds a database of --rows rows (~300 bytes each: ~300 MB at 1,000,000), then
measures (median of --repeat runs, warm page cache, each in its own process so
peak memory is the process's own):

  full snapshot          vs  sqlite3 .backup        target <= 1.5x
  incremental snapshot   vs  sqlite3 .backup        target <= 0.5x, after changing 0.1% of rows spread over the table
  bytes stored by it     vs  database size          target <= 2%, manifest included
  restore (+hash check, quick_check)  vs  cp        target <= 3x (also with --jobs 1, one process)
  peak memory of snapshot and restore               target <= 150 MB, flat in database size
                                                    (a restore's: its largest process, and all its
                                                    processes together, as PSS)
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _setup import byte_compile  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable


def build(path: str, rows: int) -> None:
    conn = apsw.Connection(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE events(id INTEGER PRIMARY KEY, user_id INTEGER, kind TEXT, payload TEXT, created_at TEXT)")
    rnd = random.Random(42)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo"]
    batch = 20000
    for start in range(0, rows, batch):
        with conn:
            conn.executemany(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                (
                    (i + 1, rnd.randrange(50000), rnd.choice(words),
                     " ".join(rnd.choice(words) for _ in range(30)) + f" {rnd.random():.12f}",
                     f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z")
                    for i in range(start, min(rows, start + batch))
                ),
            )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def change_spread(path: str, rows: int, fraction: float = 0.001, round_: int = 0) -> int:
    n = max(1, int(rows * fraction))
    step = rows // n
    conn = apsw.Connection(path)
    with conn:
        for k in range(n):
            conn.execute("UPDATE events SET kind = 'changed', payload = ? WHERE id = ?",
                         (f"edited {k} in round {round_} " + "z" * 40, 1 + k * step + round_))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return n


def timed(cmd: list[str], cwd: str | None = None) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of a child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}: {p.stderr.read().decode()}")
    return dt, usage.ru_maxrss * 1024


def tree_peak_pss(cmd: list[str], cwd: str | None = None) -> int:
    """Peak memory (bytes) of a command and every process it forks, summed as PSS (pages shared
    between them counted once), sampled every 5 ms: a restore's children share its memory."""
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def tree(pid: int) -> list[int]:
        out = [pid]
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    out += [d for c in fh.read().split() for d in tree(int(c))]
        except OSError:
            pass
        return out

    peak = 0
    while p.poll() is None:
        total = 0
        for pid in tree(p.pid):
            try:
                with open(f"/proc/{pid}/smaps_rollup") as fh:
                    total += sum(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
            except OSError:
                pass
        peak = max(peak, total * 1024)
        time.sleep(0.005)
    return peak


def backup_cmd(src: str, dst: str) -> list[str]:
    if shutil.which("sqlite3"):
        return ["sqlite3", src, f".backup '{dst}'"]
    code = "import sqlite3,sys; s=sqlite3.connect(sys.argv[1]); d=sqlite3.connect(sys.argv[2]); s.backup(d); d.close()"
    return [PY, "-c", code, src, dst]


def median(xs):
    return statistics.median(xs)


def main() -> None:
    byte_compile()
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="mulligan-bench-")
    os.makedirs(work, exist_ok=True)
    db = os.path.join(work, "app.db")
    pristine = os.path.join(work, f"pristine-{args.rows}.db")
    if not os.path.exists(pristine):
        print(f"building {args.rows} rows in {pristine} ...", file=sys.stderr)
        build(pristine, args.rows)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    shutil.copyfile(pristine, db)
    size = os.path.getsize(db)
    mull = [PY, "-m", "mulligan"]
    res: dict = {"rows": args.rows, "db_bytes": size, "backup_tool": "sqlite3 CLI" if shutil.which("sqlite3") else "python sqlite3 backup API"}

    # anchors
    backups, cps = [], []
    for i in range(args.repeat):
        dst = os.path.join(work, f"backup-{i}.db")
        backups.append(timed(backup_cmd(db, dst))[0])
        os.unlink(dst)
        dst = os.path.join(work, f"cp-{i}.db")
        cps.append(timed(["cp", db, dst])[0])
        os.unlink(dst)
    res["backup_s"], res["cp_s"] = median(backups), median(cps)

    # full snapshots, each into a fresh vault
    fulls, full_rss = [], []
    for i in range(args.repeat):
        proj = os.path.join(work, f"proj-{i}")
        shutil.rmtree(proj, ignore_errors=True)
        os.makedirs(proj)
        subprocess.run(mull + ["init"], cwd=proj, check=True, capture_output=True)
        if i == 0:
            subprocess.run(mull + ["protect", db, "--name", "app", "--env", "production"], cwd=proj, check=True, capture_output=True)
        else:
            with open(os.path.join(work, "proj-0", "mulligan.toml")) as fh:
                conf = fh.read()
            with open(os.path.join(proj, "mulligan.toml"), "w") as fh:
                fh.write(conf)
        dt, rss = timed(mull + ["snapshot", "app", "-q"], cwd=proj)
        fulls.append(dt)
        full_rss.append(rss)
    res["full_snapshot_s"] = median(fulls)
    res["full_snapshot_peak_rss"] = max(full_rss)

    # incremental: change 0.1% of rows spread over the table, snapshot again (in proj-0)
    proj = os.path.join(work, "proj-0")
    incs, inc_rss, stored = [], [], []
    for i in range(args.repeat):
        res["changed_rows"] = change_spread(db, args.rows, round_=i)
        dt, rss = timed(mull + ["snapshot", "app", "-q"], cwd=proj)
        incs.append(dt)
        inc_rss.append(rss)
        out = subprocess.run(mull + ["--json", "snapshots", "app"], cwd=proj, check=True, capture_output=True, text=True)
        stored.append(json.loads(out.stdout)["snapshots"][-1]["new_bytes"])
    res["incremental_snapshot_s"] = median(incs)
    res["incremental_bytes_stored"] = median(stored)

    # restore with hash verification and quick_check
    rest, rest_rss = [], []
    for i in range(args.repeat):
        out = os.path.join(work, f"restored-{i}.db")
        dt, rss = timed(mull + ["restore", "app", "--latest", "--to", out, "-q"], cwd=proj)
        rest.append(dt)
        rest_rss.append(rss)
        os.unlink(out)
    res["restore_s"] = median(rest)
    res["restore_peak_rss"] = max(rest_rss)
    # the same in one process (--jobs 1), and the memory of all the restore's processes together
    one = []
    for i in range(args.repeat):
        out = os.path.join(work, f"restored-1-{i}.db")
        one.append(timed(mull + ["restore", "app", "--latest", "--to", out, "-q", "--jobs", "1"], cwd=proj)[0])
        os.unlink(out)
    res["restore_one_process_s"] = median(one)
    out = os.path.join(work, "restored-pss.db")
    res["restore_peak_pss_all_processes"] = tree_peak_pss(mull + ["restore", "app", "--latest", "--to", out, "-q"], cwd=proj)
    os.unlink(out)

    ratios = {
        "full_snapshot_vs_backup": res["full_snapshot_s"] / res["backup_s"],
        "incremental_vs_backup": res["incremental_snapshot_s"] / res["backup_s"],
        "incremental_stored_fraction": res["incremental_bytes_stored"] / size,
        "restore_vs_cp": res["restore_s"] / res["cp_s"],
    }
    res["ratios"] = ratios
    if args.json:
        print(json.dumps(res, indent=2))
        return
    mb = 1 << 20
    print(f"database: {args.rows} rows, {size / mb:.0f} MiB; anchors: backup {res['backup_s']:.2f} s ({res['backup_tool']}), cp {res['cp_s']:.2f} s")
    print(f"{'measure':38} {'mulligan':>10} {'ratio':>8} {'target':>8}")
    print(f"{'full snapshot':38} {res['full_snapshot_s']:>9.2f}s {ratios['full_snapshot_vs_backup']:>7.2f}x {'<=1.5x':>8}")
    print(f"{'incremental snapshot (0.1% rows)':38} {res['incremental_snapshot_s']:>9.2f}s {ratios['incremental_vs_backup']:>7.2f}x {'<=0.5x':>8}")
    print(f"{'bytes stored by incremental':38} {res['incremental_bytes_stored'] / mb:>7.2f}MiB {ratios['incremental_stored_fraction'] * 100:>7.2f}% {'<=2%':>8}")
    print(f"{'restore (hashes + quick_check)':38} {res['restore_s']:>9.2f}s {ratios['restore_vs_cp']:>7.2f}x {'<=3x':>8}")
    print(f"{'restore, one process (--jobs 1)':38} {res['restore_one_process_s']:>9.2f}s "
          f"{res['restore_one_process_s'] / res['cp_s']:>7.2f}x {'<=3x':>8}")
    print(f"{'peak memory, snapshot':38} {res['full_snapshot_peak_rss'] / mb:>7.0f}MiB {'':>8} {'<=150MB':>8}")
    print(f"{'peak memory, restore (largest process)':38} {res['restore_peak_rss'] / mb:>7.0f}MiB {'':>8} {'<=150MB':>8}")
    print(f"{'peak memory, restore (all, PSS)':38} {res['restore_peak_pss_all_processes'] / mb:>7.0f}MiB {'':>8} {'<=150MB':>8}")
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
