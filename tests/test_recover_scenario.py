"""The day Mulligan is built for: a restore over production, users writing on, then recovery.

BASE is the snapshot restored by mistake; LOST the last good state before the
restore; CURRENT is BASE plus what users wrote since, on ids that collide with
the lost rows.
"""

from __future__ import annotations

import pytest

from mulligan.ops.recover import apply_recovery, plan_recovery
from test_recover_support import Db, check_invariants, copy_db, connect, file_digest

SCHEMA = """
CREATE TABLE users(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    email TEXT,
    bio TEXT
);
CREATE TABLE posts(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    author_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title TEXT,
    body TEXT
);
CREATE TABLE comments(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    post_id INTEGER NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
    author_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    reply_to INTEGER REFERENCES comments(id) ON DELETE CASCADE,
    body TEXT
);
CREATE TABLE tags(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE);
CREATE TABLE post_tags(
    post_id INTEGER NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
    tag_id INTEGER NOT NULL REFERENCES tags(id) ON DELETE CASCADE,
    PRIMARY KEY (post_id, tag_id)
);
"""


def write(path, sql: str) -> None:
    conn = connect(path)
    with conn:
        conn.execute(sql)
    conn.close()


def now_at(plan, table, lost_key):
    [row] = [r for r in plan.rows if r.table == table and r.lost_key == lost_key]
    return row.key[0]


@pytest.fixture
def states(tmp_path):
    return build_states(tmp_path)


BASE_ROWS = """
    INSERT INTO users(username, email) VALUES ('alice', 'a@x'), ('bob', 'b@x'), ('carol', 'c@x');
    INSERT INTO posts(author_id, title, body) VALUES (1, 'hello', 'first'), (2, 'bob here', 'hi'), (3, 'carol', 'c');
    INSERT INTO comments(post_id, author_id, body) VALUES (1, 2, 'nice'), (2, 1, 'welcome');
    INSERT INTO tags(name) VALUES ('news'), ('fun');
    INSERT INTO post_tags VALUES (1, 1), (2, 2), (3, 1);
"""

# What users wrote between BASE and the mistake: lost when BASE was restored over production.
LOST_WRITES = """
    INSERT INTO users(username, email) VALUES ('dave', 'd@x'), ('erin', 'e@x');      -- 4, 5
    INSERT INTO posts(author_id, title, body) VALUES (5, 'erin writes', 'e1'), (1, 'alice again', 'a2'); -- 4, 5
    INSERT INTO comments(post_id, author_id, body) VALUES (4, 1, 'good one');        -- 3
    INSERT INTO comments(post_id, author_id, reply_to, body) VALUES (4, 5, 3, 'thanks'); -- 4
    INSERT INTO comments(post_id, author_id, body) VALUES (1, 4, 'dave was here');   -- 5
    INSERT INTO tags(name) VALUES ('rust');                                         -- 3
    INSERT INTO post_tags VALUES (4, 3), (5, 1), (1, 3);
    UPDATE users SET bio = 'lost bio' WHERE id = 2;
    UPDATE posts SET title = 'hello, edited in LOST' WHERE id = 1;
    DELETE FROM comments WHERE id = 2;
    DELETE FROM users WHERE id = 3;                                                 -- cascades
"""

# What users wrote after the mistake, on the ids the lost rows had.
CURRENT_WRITES = """
    INSERT INTO users(username, email) VALUES ('frank', 'f@x'), ('dave', 'dave@new');  -- 4, 5: dave again
    INSERT INTO posts(author_id, title, body) VALUES (4, 'frank posts', 'f1');          -- 4
    INSERT INTO posts(author_id, title, body) VALUES (3, 'carol is back', 'c2');        -- 5
    INSERT INTO comments(post_id, author_id, body) VALUES (4, 5, 'dave on frank');      -- 3
    UPDATE posts SET body = 'first, edited in CURRENT' WHERE id = 1;
    -- The app adds a trigger after the mistake; it must not fire during replay.
    CREATE TRIGGER posts_touch AFTER UPDATE ON posts
    BEGIN UPDATE users SET bio = 'touched' WHERE id = NEW.author_id; END;
"""


def build_states(tmp_path):
    """(BASE, LOST, CURRENT, folder): the story above, as three files."""
    base = str(tmp_path / "base.db")
    write(base, SCHEMA)
    write(base, BASE_ROWS)
    lost = copy_db(base, tmp_path / "lost.db")
    write(lost, LOST_WRITES)
    current = copy_db(base, tmp_path / "current.db")
    write(current, CURRENT_WRITES)
    return base, lost, current, tmp_path


def test_the_plan_changes_nothing_and_lists_what_it_would_do(states):
    base, lost, current, _ = states
    before = file_digest(current)
    plan = plan_recovery(base, lost, current)
    assert file_digest(current) == before
    assert plan.tables["users"].remapped == 1  # erin: id 5 went to dave's second sign-up
    assert any(c.kind == "unique" and c.table == "users" for c in plan.conflicts)
    assert plan.merge.counters["users"] > 5


def test_apply_recovers_every_lost_row_or_lists_it_and_keeps_current_writes(states):
    base, lost, current, tmp = states
    before = copy_db(current, tmp / "before.db")
    result = apply_recovery(base, lost, current)
    check_invariants(base, lost, before, current, result)
    after = Db(current)
    plan = result.plan

    # Frank, dave's second sign-up and their writes are untouched.
    assert after.tables["users"][(4,)]["username"] == "frank"
    assert after.tables["users"][(5,)]["username"] == "dave"
    assert after.tables["comments"][(3,)]["body"] == "dave on frank"

    # Lost dave collides with the live dave by username: a conflict for a human, both rows shown.
    dave = [c for c in plan.conflicts if c.table == "users" and c.key == (4,)]
    assert dave and dave[0].kind == "unique"
    assert dave[0].rows["lost"]["email"] == "d@x" and dave[0].rows["current"]["email"] == "dave@new"
    # ...and the comment dave wrote in LOST waits with him.
    assert any(c.table == "comments" and c.key == (5,) and c.kind == "parent-conflict" for c in plan.conflicts)

    # Erin got a new id; her post and the comments on it follow her, the reply follows its parent.
    erin = plan.key_map["users"][(5,)][0]
    assert after.tables["users"][(erin,)]["username"] == "erin"
    new_post = plan.key_map["posts"][(4,)][0]
    assert after.tables["posts"][(new_post,)]["author_id"] == erin
    c3 = plan.key_map["comments"][(3,)][0]
    c4 = now_at(plan, "comments", (4,))
    assert c4 == 4  # a key CURRENT never gave out stays
    assert after.tables["comments"][(c3,)]["post_id"] == new_post
    assert after.tables["comments"][(c4,)]["reply_to"] == c3
    # The link table's natural key is made of remapped keys.
    assert (new_post, 3) in after.tables["post_tags"]

    # The row both edited merged cell by cell.
    assert after.tables["posts"][(1,)]["title"] == "hello, edited in LOST"
    assert after.tables["posts"][(1,)]["body"] == "first, edited in CURRENT"

    # Carol wrote after the mistake: her lost deletion is reported, not replayed, and nothing cascaded.
    assert (3,) in after.tables["users"] and (5,) in after.tables["posts"]
    carol = [r for r in plan.rows if r.table == "users" and r.lost_key == (3,)]
    assert carol[0].status == "skipped"
    # Her old post went, as in LOST.
    assert (3,) not in after.tables["posts"]

    # The trigger did not fire (bob's bio is LOST's), and the plan said so.
    assert after.tables["users"][(1,)]["bio"] is None
    assert any("posts_touch" in w for w in plan.warnings)

    # Counters end above every key.
    assert all(after.seq[t] >= max(k[0] for k in after.tables[t]) for t in ("users", "posts", "comments", "tags"))


def test_every_lost_row_says_where_it_is_now_and_whose_it_is(states):
    base, lost, current, _ = states
    result = apply_recovery(base, lost, current)
    rows = {(r.table, r.change, r.lost_key): r for r in result.plan.rows}
    erin_post = rows[("posts", "insert", (4,))]
    assert erin_post.status == "remapped"
    assert erin_post.owner["label"] == "erin" and erin_post.owner["user"] == 5
    assert erin_post.owner["now"] == result.plan.key_map["users"][(5,)][0]
    alice_post = rows[("posts", "insert", (5,))]
    assert alice_post.status == "remapped" and alice_post.owner["label"] == "alice" and alice_post.owner["now"] == 1
    dave_comment = rows[("comments", "insert", (5,))]
    assert dave_comment.status == "conflict" and dave_comment.owner["label"] == "dave" and dave_comment.owner["now"] is None


def test_the_plan_groups_lost_rows_by_user_for_support(states):
    from mulligan.report.recover import by_user

    base, lost, current, _ = states
    users = {u["label"]: u for u in by_user(plan_recovery(base, lost, current))}
    assert users["erin"]["now"] == 6 and users["erin"]["remapped"] == 3 and users["erin"]["conflicts"] == 0
    assert users["dave"]["now"] is None and users["dave"]["conflicts"] == 2
    assert users["carol"]["now"] == 3 and users["carol"]["skipped"] == 1  # her account stays: she wrote since
