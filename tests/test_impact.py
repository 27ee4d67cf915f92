"""impact: every differing row is attributed to the user who owns it."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

from diffkit import build, derive
from mulligan.ops.impact import impact, impact_states

DJANGO = """
CREATE TABLE auth_user(id INTEGER PRIMARY KEY AUTOINCREMENT, password varchar(128) NOT NULL, last_login datetime NULL,
  username varchar(150) NOT NULL UNIQUE, email varchar(254) NOT NULL, date_joined datetime NOT NULL);
CREATE TABLE blog_post(id INTEGER PRIMARY KEY AUTOINCREMENT, title varchar(200) NOT NULL, created_at datetime NOT NULL,
  author_id integer NOT NULL REFERENCES auth_user(id) DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE blog_comment(id INTEGER PRIMARY KEY AUTOINCREMENT, body text NOT NULL, created_at datetime NOT NULL,
  post_id integer NOT NULL REFERENCES blog_post(id) DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE blog_tag(id INTEGER PRIMARY KEY AUTOINCREMENT, name varchar(50) NOT NULL UNIQUE);
CREATE TABLE blog_post_tags(id INTEGER PRIMARY KEY AUTOINCREMENT,
  post_id integer NOT NULL REFERENCES blog_post(id) DEFERRABLE INITIALLY DEFERRED,
  tag_id integer NOT NULL REFERENCES blog_tag(id) DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE django_session(session_key varchar(40) NOT NULL PRIMARY KEY, session_data text NOT NULL, expire_date datetime NOT NULL);
CREATE TABLE _mulligan_identity(id INTEGER PRIMARY KEY, env);
INSERT INTO auth_user VALUES (1, 'x', NULL, 'alice', 'alice@example.com', '2026-01-01 09:00:00'),
                             (2, 'x', NULL, 'bob', 'bob@example.com', '2026-01-02 09:00:00'),
                             (3, 'x', NULL, 'carol', 'carol@example.com', '2026-01-03 09:00:00');
INSERT INTO blog_tag VALUES (1, 'sqlite'), (2, 'django');
INSERT INTO blog_post VALUES (10, 'alice one', '2026-11-20 08:00:00', 1), (11, 'alice two', '2026-11-20 09:30:00', 1),
                             (12, 'bob one', '2026-11-19 12:00:00', 2), (13, 'carol one', '2026-11-18 12:00:00', 3);
INSERT INTO blog_comment VALUES (100, 'nice', '2026-11-20 10:00:00', 10), (101, 'great', '2026-11-20 10:05:00', 10),
                                (102, 'hm', '2026-11-20 11:00:00', 11), (103, 'ok', '2026-11-20 11:00:00', 12);
INSERT INTO blog_post_tags VALUES (1000, 10, 1), (1001, 11, 2), (1002, 12, 1);
INSERT INTO django_session VALUES ('s1', 'data', '2026-12-01 00:00:00');
"""

# TO: alice lost two posts with their comments and tags, bob's post was edited, carol
# is gone (with her post), dave signed up, a tag and a session appeared.
CHANGES = """
DELETE FROM blog_comment WHERE post_id IN (10, 11); DELETE FROM blog_post_tags WHERE post_id IN (10, 11);
DELETE FROM blog_post WHERE id IN (10, 11, 13); DELETE FROM auth_user WHERE id = 3;
UPDATE blog_post SET title = 'bob one, edited' WHERE id = 12;
INSERT INTO auth_user VALUES (4, 'x', NULL, 'dave', 'dave@example.com', '2026-11-21 10:00:00');
INSERT INTO blog_tag VALUES (3, 'new'); INSERT INTO django_session VALUES ('s2', 'data', '2026-12-02 00:00:00');
UPDATE _mulligan_identity SET env = 'restored';
"""


def django_pair(tmp_path):
    a = build(tmp_path / "lost.db", DJANGO)
    return a, derive(a, tmp_path / "now.db", CHANGES)


def test_every_differing_row_is_attributed_to_its_owner_following_foreign_keys(tmp_path):
    a, b = django_pair(tmp_path)
    res = impact(None, None, a, b)
    assert res.users_table == "auth_user"
    users = {u.label: u for u in res.users}
    assert set(users) == {"alice", "bob", "carol", "dave"}
    assert users["alice"].counts == {"blog_comment": {"insert": 0, "update": 0, "delete": 3},
                                     "blog_post": {"insert": 0, "update": 0, "delete": 2},
                                     "blog_post_tags": {"insert": 0, "update": 0, "delete": 2}}
    assert users["bob"].counts == {"blog_post": {"insert": 0, "update": 1, "delete": 0}}
    assert users["carol"].counts == {"auth_user": {"insert": 0, "update": 0, "delete": 1},
                                     "blog_post": {"insert": 0, "update": 0, "delete": 1}}
    assert users["dave"].counts == {"auth_user": {"insert": 1, "update": 0, "delete": 0}}
    assert res.users[0].label == "alice" and res.users[0].total == 7


def test_rows_without_an_owner_are_counted_not_dropped(tmp_path):
    a, b = django_pair(tmp_path)
    res = impact(None, None, a, b)
    assert res.unowned == {"blog_tag": {"insert": 1, "update": 0, "delete": 0},
                           "django_session": {"insert": 1, "update": 0, "delete": 0}}
    assert res.owners["blog_comment"] == "post_id -> blog_post -> author_id"
    assert res.owners["auth_user"] == "self" and res.owners["blog_tag"] == "none"
    assert "_mulligan_identity" not in res.tables


def test_impact_states_takes_two_paths_and_gives_the_same_answer(tmp_path):
    a, b = django_pair(tmp_path)
    via_specs, via_paths = impact(None, None, a, b), impact_states(a, b)
    assert [(u.id, u.counts) for u in via_paths.users] == [(u.id, u.counts) for u in via_specs.users]
    assert via_paths.from_state["path"] == a


def test_the_time_range_comes_from_the_rows_timestamps(tmp_path):
    a, b = django_pair(tmp_path)
    users = {u.label: u for u in impact(None, None, a, b).users}
    assert (users["alice"].earliest, users["alice"].latest) == ("2026-11-20 08:00:00", "2026-11-20 11:00:00")
    assert users["dave"].earliest == "2026-11-21 10:00:00"


def test_a_configured_owner_column_is_used_for_a_table_without_foreign_keys(tmp_path):
    a = build(tmp_path / "a.db", "CREATE TABLE accounts(id INTEGER PRIMARY KEY, email TEXT);"
                                 "CREATE TABLE notes(id INTEGER PRIMARY KEY, writer INTEGER, body TEXT);"
                                 "INSERT INTO accounts VALUES (1, 'a@example.com'), (2, 'b@example.com');"
                                 "INSERT INTO notes VALUES (1, 1, 'x'), (2, 2, 'y')")
    b = derive(a, tmp_path / "b.db", "DELETE FROM notes")
    assert impact(None, None, a, b).unowned == {"notes": {"insert": 0, "update": 0, "delete": 2}}
    res = impact(None, None, a, b, owners={"notes": "writer"})
    assert res.users_table == "accounts"
    assert sorted((u.id, u.label) for u in res.users) == [(1, "a@example.com"), (2, "b@example.com")]
    assert res.unowned == {}


def test_without_a_users_table_the_message_is_clear_and_the_counts_are_given(tmp_path):
    a = build(tmp_path / "a.db", "CREATE TABLE orders(id INTEGER PRIMARY KEY, total REAL); INSERT INTO orders VALUES (1, 9.5), (2, 3)")
    b = derive(a, tmp_path / "b.db", "DELETE FROM orders WHERE id = 1; UPDATE orders SET total = 4 WHERE id = 2")
    res = impact(None, None, a, b)
    assert res.users_table is None and res.users == []
    assert "no users table" in res.message and "users_table" in res.message
    assert res.tables == {"orders": {"insert": 0, "update": 1, "delete": 1}}


def run_cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "MULLIGAN_CONFIG"}
    p = subprocess.run([sys.executable, "-m", "mulligan", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_the_impact_command_renders_text_json_and_csv(tmp_path):
    import json

    a, b = django_pair(tmp_path)
    code, out, err = run_cli("impact", a, b, cwd=tmp_path)
    assert code == 0, err
    assert "alice" in out and "blog_post -2" in out and "rows without an owner" in out
    doc = json.loads(run_cli("impact", a, b, "--json", cwd=tmp_path)[1])
    assert doc["users_table"] == "auth_user" and doc["users"][0]["label"] == "alice"
    assert doc["users"][0]["tables"]["blog_comment"]["delete"] == 3
    rows = list(csv.DictReader(io.StringIO(run_cli("impact", a, b, "--format", "csv", cwd=tmp_path)[1])))
    assert {"user_id": "1", "label": "alice", "table": "blog_post", "inserted": "0", "updated": "0", "deleted": "2",
            "earliest": "2026-11-20 08:00:00", "latest": "2026-11-20 11:00:00"} in rows
    assert any(r["label"] == "(no owner)" and r["table"] == "blog_tag" for r in rows)


def test_the_users_table_and_owners_configured_for_a_target_are_used(project):
    from diffkit import run
    import apsw

    db = build(project.dir / "app.db", "CREATE TABLE people(id INTEGER PRIMARY KEY, username TEXT);"
                                       "CREATE TABLE users(id INTEGER PRIMARY KEY, username TEXT);"
                                       "CREATE TABLE notes(id INTEGER PRIMARY KEY, writer INTEGER);"
                                       "INSERT INTO people VALUES (7, 'gus'); INSERT INTO notes VALUES (1, 7)")
    project.protect(db)
    text = project.config_path.read_text().replace("[targets.app]\n", '[targets.app]\nusers_table = "people"\n')
    project.config_path.write_text(text + '\n[targets.app.owners]\nnotes = "writer"\n')
    from mulligan.ops.snapshot import take_snapshot

    ws = project.ws
    m = take_snapshot(ws, ws.target("app"))
    conn = apsw.Connection(db)
    run(conn, "DELETE FROM notes")
    conn.close()
    r = project.call("impact", "app", m.id, "live", "--json")
    assert r.code == 0, r.err
    assert r.json["users_table"] == "people"
    assert [(u["label"], u["tables"]) for u in r.json["users"]] == [("gus", {"notes": {"insert": 0, "update": 0, "delete": 1}})]


def test_a_row_whose_parent_is_gone_from_both_states_is_counted_without_an_owner(tmp_path):
    a = build(tmp_path / "a.db", "CREATE TABLE users(id INTEGER PRIMARY KEY, username TEXT);"
                                 "CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id));"
                                 "CREATE TABLE comments(id INTEGER PRIMARY KEY, post_id INTEGER REFERENCES posts(id));"
                                 "INSERT INTO users VALUES (1, 'ann'); INSERT INTO posts VALUES (5, 1);"
                                 "INSERT INTO comments VALUES (1, 5), (2, 404)")
    b = derive(a, tmp_path / "b.db", "DELETE FROM comments")
    res = impact(None, None, a, b)
    assert [(u.label, u.counts) for u in res.users] == [("ann", {"comments": {"insert": 0, "update": 0, "delete": 1}})]
    assert res.unowned == {"comments": {"insert": 0, "update": 0, "delete": 1}}


def test_an_updated_row_belongs_to_its_owner_in_the_from_state(tmp_path):
    a = build(tmp_path / "a.db", "CREATE TABLE users(id INTEGER PRIMARY KEY, username TEXT);"
                                 "CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), title TEXT);"
                                 "INSERT INTO users VALUES (1, 'ann'), (2, 'bo'); INSERT INTO posts VALUES (5, 1, 't')")
    b = derive(a, tmp_path / "b.db", "UPDATE posts SET user_id = 2, title = 'taken' WHERE id = 5")
    assert [u.label for u in impact(None, None, a, b).users] == ["ann"]
    assert [u.label for u in impact(None, None, b, a).users] == ["bo"]


def test_a_foreign_key_to_the_username_is_followed_to_the_user_id(tmp_path):
    a = build(tmp_path / "a.db", "CREATE TABLE Users(id INTEGER PRIMARY KEY, username TEXT UNIQUE);"
                                 "CREATE TABLE posts(id INTEGER PRIMARY KEY, author TEXT REFERENCES USERS(username));"
                                 "INSERT INTO Users VALUES (7, 'ann'); INSERT INTO posts VALUES (1, 'ann')")
    b = derive(a, tmp_path / "b.db", "DELETE FROM posts")
    res = impact(None, None, a, b)
    assert [(u.id, u.label) for u in res.users] == [(7, "ann")]
    assert res.owners["posts"] == "author -> Users -> id"
