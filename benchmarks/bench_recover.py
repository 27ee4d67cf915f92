"""Recovery merge at scale: a 1,000,000-row database, 10,000 lost rows over 3 tables, with collisions.

users / posts / comments (AUTOINCREMENT keys, foreign keys with ON DELETE
CASCADE, a UNIQUE username). BASE holds 1,000,000 rows. LOST adds 10,000 rows
over the three tables (plus a few hundred edits and deletes); CURRENT is BASE
plus half as many new rows written after the mistake, on the same ids, so most
lost rows collide and are remapped, their children following them.

Measured: the plan (read BASE/LOST, look up CURRENT, nothing written), and the
apply (plan again under the write lock, write, counters, foreign_key_check,
integrity_check, commit). The anchor, measured in the same run, is sqldiff
computing only the BASE -> LOST diff (which tells nothing about CURRENT).

    python benchmarks/bench_recover.py [--rows 1000000] [--lost 10000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import apsw

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from mulligan.ops.recover import ApplyHooks, apply_recovery, plan_recovery  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _setup import byte_compile  # noqa: E402

SCHEMA = """

CREATE TABLE users(id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT NOT NULL UNIQUE, email TEXT, bio TEXT);
CREATE TABLE posts(id INTEGER PRIMARY KEY AUTOINCREMENT,
                   author_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE, title TEXT, body TEXT);
CREATE TABLE comments(id INTEGER PRIMARY KEY AUTOINCREMENT,
                      post_id INTEGER NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
                      author_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE, body TEXT);
CREATE INDEX posts_author ON posts(author_id);
CREATE INDEX comments_post ON comments(post_id);
CREATE INDEX comments_author ON comments(author_id);
"""


def build_base(path: str, rows: int) -> tuple[int, int, int]:
    n_users, n_posts = rows // 10, rows // 2
    n_comments = rows - n_users - n_posts
    conn = apsw.Connection(path)
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.execute(SCHEMA)
    with conn:
        conn.executemany("INSERT INTO users(username, email) VALUES (?, ?)",
                         ((f"user{i}", f"user{i}@example.com") for i in range(n_users)))
        conn.executemany("INSERT INTO posts(author_id, title, body) VALUES (?, ?, ?)",
                         ((1 + i % n_users, f"post {i}", "x" * 40) for i in range(n_posts)))
        conn.executemany("INSERT INTO comments(post_id, author_id, body) VALUES (?, ?, ?)",
                         ((1 + i % n_posts, 1 + (i * 7) % n_users, "nice post") for i in range(n_comments)))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return n_users, n_posts, n_comments


def write_history(path: str, tag: str, n_new: int, sizes: tuple[int, int, int], edits: int) -> None:
    """n_new rows spread 20/40/40 over users/posts/comments, children of the new users and posts."""
    n_users, n_posts, _ = sizes
    conn = apsw.Connection(path)
    conn.execute("PRAGMA foreign_keys = ON")
    nu, np_ = n_new // 5, (n_new * 2) // 5
    nc = n_new - nu - np_
    with conn:
        first_user = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='users'").fetchone()[0] + 1
        conn.executemany("INSERT INTO users(username, email) VALUES (?, ?)",
                         ((f"{tag}-user{i}", f"{tag}{i}@example.com") for i in range(nu)))
        first_post = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='posts'").fetchone()[0] + 1
        conn.executemany("INSERT INTO posts(author_id, title, body) VALUES (?, ?, ?)",
                         ((first_user + i % nu, f"{tag} post {i}", "y" * 40) for i in range(np_)))
        conn.executemany("INSERT INTO comments(post_id, author_id, body) VALUES (?, ?, ?)",
                         ((first_post + i % np_, first_user + (i * 3) % nu, f"{tag} comment") for i in range(nc)))
        # LOST edits bios, CURRENT emails of the same users: merged cell by cell.
        column = "bio" if tag == "lost" else "email"
        conn.executemany(f"UPDATE users SET {column} = ? WHERE id = ?",
                         ((f"{tag} {column}", 1 + (i * 97) % n_users) for i in range(edits)))
        # Both edit the same titles differently: conflicts, CURRENT's stay.
        conn.executemany("UPDATE posts SET title = ? WHERE id = ?",
                         ((f"{tag} title", 1 + (i * 89) % n_posts) for i in range(edits)))
        if tag == "lost":
            conn.executemany("DELETE FROM comments WHERE id = ?", ((1 + i * 13,) for i in range(edits)))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def main(argv=None) -> dict:
    byte_compile()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--lost", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    work = tempfile.mkdtemp(prefix="mulligan-bench-recover-")
    try:
        base = os.path.join(work, "base.db")
        t0 = time.perf_counter()
        sizes = build_base(base, args.rows)
        lost = os.path.join(work, "lost.db")
        current0 = os.path.join(work, "current0.db")
        shutil.copyfile(base, lost)
        shutil.copyfile(base, current0)
        write_history(lost, "lost", args.lost, sizes, edits=200)
        write_history(current0, "live", args.lost // 2, sizes, edits=200)
        print(f"built {args.rows:,} rows in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        anchor = []
        try:
            import sqldiff

            for _ in range(args.repeat):
                t = time.perf_counter()
                sqldiff.diff(base, lost)
                anchor.append(time.perf_counter() - t)
        except ImportError:
            pass

        plans, applies, totals, locks, checks = [], [], [], [], []
        for _ in range(args.repeat):
            current = os.path.join(work, "current.db")
            shutil.copyfile(current0, current)
            t = time.perf_counter()
            plan = plan_recovery(base, lost, current)
            t_plan = time.perf_counter() - t
            t = time.perf_counter()
            res = apply_recovery(base, lost, current, hooks=ApplyHooks())
            t_apply = time.perf_counter() - t
            plans.append(t_plan)
            applies.append(t_apply)
            totals.append(t_plan + t_apply)
            locks.append(res.lock_seconds)
            checks.append(res.check_seconds)
        p = res.plan
        out = {
            "rows": args.rows,
            "lost_rows": args.lost,
            "written": len(p.merge.writes),
            "remapped": sum(t.remapped for t in p.tables.values()),
            "conflicts": len(p.conflicts),
            "plan_s": round(statistics.median(plans), 3),
            "apply_s": round(statistics.median(applies), 3),
            "plan_plus_apply_s": round(statistics.median(totals), 3),
            "write_lock_s": round(statistics.median(locks), 3),
            "checks_s": round(statistics.median(checks), 3),
            "sqldiff_base_to_lost_s": round(statistics.median(anchor), 3) if anchor else None,
        }
        del plan
        if out["sqldiff_base_to_lost_s"]:
            out["ratio_vs_sqldiff"] = round(out["plan_plus_apply_s"] / out["sqldiff_base_to_lost_s"], 2)
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            for k, v in out.items():
                print(f"{k:24} {v}")
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
