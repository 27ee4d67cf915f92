"""A stand-in application: commits continuously until killed.

Each transaction appends row n to `log` and sets `state.n = n` together, so a
consistent copy has log rows 1..N and state.n == N. It also rewrites a spread
of `blob` rows (page churn) and, with --checkpoints, forces TRUNCATE
checkpoints now and then so the WAL restarts under readers.

usage: python writer.py DB [--journal wal|delete] [--checkpoints] [--rate N] [--log FILE]
"""

import os
import random
import sys
import time

import apsw


def setup(path: str, journal: str) -> None:
    conn = apsw.Connection(path)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS log(n INTEGER PRIMARY KEY, t REAL, pad TEXT);"
        "CREATE TABLE IF NOT EXISTS state(id INTEGER PRIMARY KEY, n INTEGER);"
        "CREATE TABLE IF NOT EXISTS blob(id INTEGER PRIMARY KEY, data BLOB);"
        "INSERT OR IGNORE INTO state VALUES (1, 0);"
    )
    with conn:
        for i in range(1, 301):
            conn.execute("INSERT OR IGNORE INTO blob VALUES (?, randomblob(900))", (i,))
    conn.close()


def main() -> None:
    path = sys.argv[1]
    args = sys.argv[2:]
    journal = args[args.index("--journal") + 1] if "--journal" in args else "wal"
    rate = float(args[args.index("--rate") + 1]) if "--rate" in args else 0
    logf = open(args[args.index("--log") + 1], "a", buffering=1) if "--log" in args else None
    checkpoints = "--checkpoints" in args
    setup(path, journal)
    conn = apsw.Connection(path)
    conn.set_busy_timeout(10000)
    n = conn.execute("SELECT n FROM state").fetchone()[0]
    rnd = random.Random(os.getpid())
    print("ready", flush=True)
    while True:
        n += 1
        with conn:
            conn.execute("INSERT INTO log VALUES (?, ?, ?)", (n, time.time(), "p" * rnd.randint(0, 300)))
            conn.execute("UPDATE state SET n = ? WHERE id = 1", (n,))
            for _ in range(3):
                conn.execute("UPDATE blob SET data = randomblob(900) WHERE id = ?", (rnd.randint(1, 300),))
        t = time.time()
        if logf:
            logf.write(f"{n} {t:.6f}\n")
        if checkpoints and n % 50 == 0:
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except apsw.BusyError:
                pass
        if rate:
            time.sleep(1.0 / rate)


if __name__ == "__main__":
    main()
