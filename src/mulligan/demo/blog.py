"""The sample app: a small blog (users, posts, comments, tags, post_tags) in SQLite WAL mode.

AUTOINCREMENT keys and foreign keys, as a Django or Rails app would have them. The
actions are what the app's users do; each is one short write transaction and returns
what it wrote, so the simulated traffic can be logged and checked.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone

import apsw

SCHEMA = """
CREATE TABLE users(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL UNIQUE,
    joined_at TEXT NOT NULL
);
CREATE TABLE posts(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    author_id INTEGER NOT NULL REFERENCES users(id),
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE comments(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    post_id INTEGER NOT NULL REFERENCES posts(id),
    author_id INTEGER NOT NULL REFERENCES users(id),
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE tags(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE post_tags(
    post_id INTEGER NOT NULL REFERENCES posts(id),
    tag_id INTEGER NOT NULL REFERENCES tags(id),
    PRIMARY KEY (post_id, tag_id)
);
CREATE INDEX posts_author ON posts(author_id);
CREATE INDEX comments_post ON comments(post_id);
"""

NAMES = ("ada", "grace", "linus", "guido", "barbara", "ken", "margaret", "dennis", "radia", "tim", "frances",
         "edsger", "hedy", "alan", "katherine", "john", "sophie", "yukihiro", "anders", "rasmus")
WORDS = ("sqlite", "backup", "coffee", "garden", "travel", "django", "rust", "python", "music", "bread", "cycling",
         "climbing", "photos", "books", "weekend", "release", "database", "kittens", "recipes", "running")
TAGS = ("news", "howto", "life", "tech", "food", "travel", "music", "sport", "books", "photos", "rust", "python")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def connect(path: str) -> apsw.Connection:
    conn = apsw.Connection(path)
    conn.set_busy_timeout(10_000)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def create(path: str, *, users: int = 40, posts: int = 120, comments: int = 300, seed: int = 7) -> None:
    """A new blog database with some history."""
    rnd = random.Random(seed)
    conn = connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    with conn:
        conn.execute(SCHEMA)
        for name in TAGS:
            conn.execute("INSERT INTO tags(name) VALUES (?)", (name,))
        for i in range(users):
            sign_up(conn, rnd, f"{rnd.choice(NAMES)}{i}")
        for _ in range(posts):
            write_post(conn, rnd)
        for _ in range(comments):
            comment(conn, rnd)
    conn.close()


def _user(conn: apsw.Connection, rnd: random.Random) -> int:
    top = conn.execute("SELECT max(id) FROM users").fetchone()[0]
    while True:  # ids have gaps only where users were removed; try again on a miss
        uid = rnd.randint(1, top)
        if conn.execute("SELECT 1 FROM users WHERE id=?", (uid,)).fetchone():
            return uid


def _post(conn: apsw.Connection, rnd: random.Random) -> int | None:
    top = conn.execute("SELECT max(id) FROM posts").fetchone()[0]
    if top is None:
        return None
    pid = rnd.randint(max(1, top - 40), top)  # people comment on recent posts
    return pid if conn.execute("SELECT 1 FROM posts WHERE id=?", (pid,)).fetchone() else None


def sign_up(conn: apsw.Connection, rnd: random.Random, username: str | None = None) -> dict:
    username = username or f"{rnd.choice(NAMES)}{rnd.randint(100, 99999)}"
    conn.execute("INSERT OR IGNORE INTO users(username, email, joined_at) VALUES (?, ?, ?)",
                 (username, f"{username}@example.com", now()))
    uid = conn.execute("SELECT id FROM users WHERE username=?", (username,)).fetchone()[0]
    return {"action": "sign_up", "table": "users", "id": uid, "user": uid}


def write_post(conn: apsw.Connection, rnd: random.Random, author: int | None = None) -> dict:
    author = author or _user(conn, rnd)
    title = f"{rnd.choice(WORDS).title()} and {rnd.choice(WORDS)}"
    conn.execute("INSERT INTO posts(author_id, title, body, created_at) VALUES (?, ?, ?, ?)",
                 (author, title, " ".join(rnd.choice(WORDS) for _ in range(40)), now()))
    pid = conn.last_insert_rowid()
    for tag in rnd.sample(range(1, len(TAGS) + 1), rnd.randint(1, 2)):
        conn.execute("INSERT OR IGNORE INTO post_tags(post_id, tag_id) VALUES (?, ?)", (pid, tag))
    return {"action": "write_post", "table": "posts", "id": pid, "user": author}


def comment(conn: apsw.Connection, rnd: random.Random, author: int | None = None) -> dict:
    author = author or _user(conn, rnd)
    pid = _post(conn, rnd)
    if pid is None:
        return write_post(conn, rnd, author)
    conn.execute("INSERT INTO comments(post_id, author_id, body, created_at) VALUES (?, ?, ?, ?)",
                 (pid, author, " ".join(rnd.choice(WORDS) for _ in range(12)), now()))
    return {"action": "comment", "table": "comments", "id": conn.last_insert_rowid(), "user": author, "post": pid}


def edit_title(conn: apsw.Connection, rnd: random.Random, post_id: int | None = None, title: str | None = None) -> dict:
    pid = post_id or _post(conn, rnd)
    row = conn.execute("SELECT author_id FROM posts WHERE id=?", (pid,)).fetchone() if pid else None
    if row is None:
        return comment(conn, rnd)
    conn.execute("UPDATE posts SET title=? WHERE id=?", (title or f"{rnd.choice(WORDS).title()} (edited)", pid))
    return {"action": "edit_title", "table": "posts", "id": pid, "user": row[0]}


ACTIONS = ((sign_up, 0.08), (write_post, 0.30), (comment, 0.54), (edit_title, 0.08))


def act(conn: apsw.Connection, rnd: random.Random) -> dict:
    """One thing one user does, in its own transaction."""
    pick = rnd.random()
    for fn, weight in ACTIONS:
        pick -= weight
        if pick <= 0:
            break
    with conn:
        return fn(conn, rnd)


def counts(path: str) -> dict[str, int]:
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("users", "posts", "comments", "tags", "post_tags")}
    finally:
        conn.close()
