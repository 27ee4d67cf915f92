"""The rules of the recovery merge, one small database at a time."""

from __future__ import annotations

import apsw
import pytest

from mulligan.errors import MulliganError
from mulligan.ops.recover import RecoveryOptions, apply_recovery, plan_recovery
from mulligan.report.recover import recovery_sql
from test_recover_support import Db, check_invariants, connect, copy_db, file_digest


def make(tmp_path, schema: str, base_sql: str = "", lost_sql: str = "", current_sql: str = "", current_schema=None):
    base = str(tmp_path / "base.db")
    conn = connect(base)
    conn.execute(schema)
    if base_sql:
        conn.execute(base_sql)
    conn.close()
    lost = copy_db(base, tmp_path / "lost.db")
    if current_schema is None:
        current = copy_db(base, tmp_path / "current.db")
    else:
        current = str(tmp_path / "current.db")
        conn = connect(current)
        conn.execute(current_schema)
        if base_sql:
            conn.execute(base_sql)
        conn.close()
    for path, sql in ((lost, lost_sql), (current, current_sql)):
        if sql:
            conn = connect(path)
            conn.execute(sql)
            conn.close()
    return base, lost, current


def merged(tmp_path, *args, options=None, **kw):
    """Apply a recovery, check the invariants, and check that the plan's SQL script does the same."""
    base, lost, current = make(tmp_path, *args, **kw)
    before = copy_db(current, tmp_path / "before.db")
    script = recovery_sql(plan_recovery(base, lost, current, options))
    res = apply_recovery(base, lost, current, options)
    check_invariants(base, lost, before, current, res)
    conn = apsw.Connection(before)
    conn.execute(script)
    conn.close()
    assert Db(before).tables == Db(current).tables, "the SQL script does not do what the apply did"
    return res.plan, Db(current)


ITEMS = "CREATE TABLE items(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, qty INTEGER, note TEXT);"
ITEMS_BASE = "INSERT INTO items(name, qty, note) VALUES ('a', 1, ''), ('b', 2, ''), ('c', 3, '');"


def test_a_row_only_lost_changed_is_replayed_and_a_row_only_current_changed_is_kept(tmp_path):
    plan, db = merged(tmp_path, ITEMS, ITEMS_BASE,
                      lost_sql="UPDATE items SET qty = 10 WHERE id = 1",
                      current_sql="UPDATE items SET qty = 20 WHERE id = 2")
    assert db.tables["items"][(1,)]["qty"] == 10
    assert db.tables["items"][(2,)]["qty"] == 20
    assert plan.conflicts == []


def test_the_same_cell_changed_differently_is_a_conflict_and_current_keeps_its_value(tmp_path):
    plan, db = merged(tmp_path, ITEMS, ITEMS_BASE,
                      lost_sql="UPDATE items SET qty = 10, note = 'lost' WHERE id = 1",
                      current_sql="UPDATE items SET qty = 20 WHERE id = 1")
    row = db.tables["items"][(1,)]
    assert row["qty"] == 20 and row["note"] == "lost"  # the other cell still merged
    [c] = plan.conflicts
    assert c.kind == "cell" and c.columns == {"qty": {"base": 1, "lost": 10, "current": 20}}


def test_a_lost_update_of_a_row_current_deleted_is_a_conflict_and_the_row_stays_deleted(tmp_path):
    plan, db = merged(tmp_path, ITEMS, ITEMS_BASE,
                      lost_sql="UPDATE items SET qty = 10 WHERE id = 1",
                      current_sql="DELETE FROM items WHERE id = 1")
    assert (1,) not in db.tables["items"]
    assert [c.kind for c in plan.conflicts] == ["update-deleted"]


def test_a_lost_delete_of_a_row_current_updated_is_a_conflict_and_the_row_stays(tmp_path):
    plan, db = merged(tmp_path, ITEMS, ITEMS_BASE,
                      lost_sql="DELETE FROM items WHERE id = 1",
                      current_sql="UPDATE items SET qty = 20 WHERE id = 1")
    assert db.tables["items"][(1,)]["qty"] == 20
    assert [c.kind for c in plan.conflicts] == ["delete-updated"]


def test_a_surrogate_key_taken_in_current_gives_the_lost_row_a_key_above_every_key_and_counter(tmp_path):
    plan, db = merged(
        tmp_path, ITEMS, ITEMS_BASE,
        # LOST used ids up to 6 and deleted 5 and 6: its counter says 6.
        lost_sql="INSERT INTO items(name) VALUES ('l4'), ('l5'), ('l6'); DELETE FROM items WHERE id > 4",
        # CURRENT used 4 and 5, deleted 5: counter 5, largest key 4.
        current_sql="INSERT INTO items(name) VALUES ('c4'), ('c5'); DELETE FROM items WHERE id = 5",
    )
    assert plan.key_map == {"items": {(4,): (7,)}}
    assert db.tables["items"][(7,)]["name"] == "l4"
    assert db.seq["items"] == 7


def test_a_plain_integer_key_without_autoincrement_is_remapped_too(tmp_path):
    plan, db = merged(tmp_path, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);",
                      "INSERT INTO t VALUES (1, 'a');",
                      lost_sql="INSERT INTO t VALUES (2, 'lost')",
                      current_sql="INSERT INTO t VALUES (2, 'current')")
    assert plan.key_map == {"t": {(2,): (3,)}}
    assert db.tables["t"][(2,)]["v"] == "current" and db.tables["t"][(3,)]["v"] == "lost"


def test_a_natural_key_inserted_on_both_sides_with_different_content_is_a_conflict(tmp_path):
    plan, db = merged(tmp_path, "CREATE TABLE settings(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;", "",
                      lost_sql="INSERT INTO settings VALUES ('theme', 'dark'), ('lang', 'fr')",
                      current_sql="INSERT INTO settings VALUES ('theme', 'light'), ('lang', 'fr')")
    assert db.tables["settings"][("theme",)]["value"] == "light"
    [c] = plan.conflicts
    assert c.kind == "natural-key" and c.rows["lost"]["value"] == "dark" and c.rows["current"]["value"] == "light"
    lang = [r for r in plan.rows if r.lost_key == ("lang",)][0]
    assert lang.status == "present"


LINKED = """
CREATE TABLE posts(id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT);
CREATE TABLE tags(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE);
CREATE TABLE post_tags(post_id INTEGER REFERENCES posts(id), tag_id INTEGER REFERENCES tags(id),
                       PRIMARY KEY (post_id, tag_id)) WITHOUT ROWID;
CREATE TABLE tag_votes(id INTEGER PRIMARY KEY AUTOINCREMENT, post_id INTEGER, tag_id INTEGER, up INTEGER,
                       FOREIGN KEY (post_id, tag_id) REFERENCES post_tags(post_id, tag_id));
"""


def test_a_composite_foreign_key_follows_the_remapped_link_row_as_a_group(tmp_path):
    plan, db = merged(
        tmp_path, LINKED, "INSERT INTO posts(title) VALUES ('p1'); INSERT INTO tags(name) VALUES ('t1');",
        lost_sql="INSERT INTO posts(title) VALUES ('lost p2'); INSERT INTO post_tags VALUES (2, 1);"
                 "INSERT INTO tag_votes(post_id, tag_id, up) VALUES (2, 1, 1);",
        current_sql="INSERT INTO posts(title) VALUES ('current p2'); INSERT INTO post_tags VALUES (2, 1);",
    )
    assert plan.key_map["posts"] == {(2,): (3,)}
    assert plan.key_map["post_tags"] == {(2, 1): (3, 1)}  # the link's natural key is made of remapped keys
    assert (2, 1) in db.tables["post_tags"] and (3, 1) in db.tables["post_tags"]
    [vote] = db.tables["tag_votes"].values()
    assert (vote["post_id"], vote["tag_id"]) == (3, 1)


def test_a_unique_natural_key_already_in_current_is_a_conflict_showing_both_rows(tmp_path):
    plan, db = merged(tmp_path, "CREATE TABLE users(id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT UNIQUE, name TEXT);",
                      "INSERT INTO users(email, name) VALUES ('a@x', 'A');",
                      lost_sql="INSERT INTO users(email, name) VALUES ('z@x', 'Zoe (lost)')",
                      current_sql="INSERT INTO users(email, name) VALUES ('y@x', 'Yan'), ('z@x', 'Zoe again')")
    [c] = plan.conflicts
    assert c.kind == "unique" and c.rows["lost"]["name"] == "Zoe (lost)" and c.rows["current"]["name"] == "Zoe again"
    assert len(db.tables["users"]) == 3


def test_a_lost_row_whose_parent_current_deleted_is_a_conflict_not_an_orphan(tmp_path):
    plan, db = merged(
        tmp_path,
        "CREATE TABLE a(id INTEGER PRIMARY KEY); CREATE TABLE b(id INTEGER PRIMARY KEY, a_id REFERENCES a(id));",
        "INSERT INTO a VALUES (1), (2);",
        lost_sql="INSERT INTO b VALUES (1, 1)",
        current_sql="DELETE FROM a WHERE id = 1",
    )
    assert [c.kind for c in plan.conflicts] == ["missing-parent"]
    assert db.tables["b"] == {}


def test_mulligans_own_tables_are_never_merged(tmp_path):
    plan, db = merged(tmp_path, ITEMS + "CREATE TABLE _mulligan_identity(k TEXT PRIMARY KEY, v TEXT);",
                      "INSERT INTO _mulligan_identity VALUES ('env', 'production');",
                      lost_sql="UPDATE _mulligan_identity SET v = 'staging'; INSERT INTO _mulligan_identity VALUES ('x', 'y');")
    assert "_mulligan_identity" not in plan.tables
    assert Db(db.path).tables.get("_mulligan_identity") is None  # Db skips them too; read directly:
    conn = connect(db.path)
    assert conn.execute("SELECT * FROM _mulligan_identity").fetchall() == [("env", "production")]


def test_triggers_do_not_fire_by_default_and_fire_when_asked(tmp_path):
    schema = ITEMS + "CREATE TABLE log(id INTEGER PRIMARY KEY, what TEXT);"
    trig = "CREATE TRIGGER items_log AFTER INSERT ON items BEGIN INSERT INTO log(what) VALUES (NEW.name); END;"
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    plan, db = merged(tmp_path / "off", schema, ITEMS_BASE,
                      lost_sql="INSERT INTO items(name) VALUES ('new')", current_sql=trig)
    assert db.tables["log"] == {}
    assert plan.merge.triggers == {"items": ["items_log"]}
    base, lost, current = make(tmp_path / "on", schema, ITEMS_BASE, lost_sql="INSERT INTO items(name) VALUES ('new')",
                               current_sql=trig)
    apply_recovery(base, lost, current, RecoveryOptions(triggers=True))
    assert [r["what"] for r in Db(current).tables["log"].values()] == ["new"]


def test_the_apply_plans_again_under_the_lock_so_keys_taken_meanwhile_are_not_reused(tmp_path):
    base, lost, current = make(tmp_path, ITEMS, ITEMS_BASE,
                               lost_sql="INSERT INTO items(name) VALUES ('lost')",
                               current_sql="INSERT INTO items(name) VALUES ('current')")
    plan = plan_recovery(base, lost, current)
    assert plan.key_map == {"items": {(4,): (5,)}}
    conn = connect(current)
    conn.execute("INSERT INTO items(name) VALUES ('written after the plan')")  # takes 5
    conn.close()
    res = apply_recovery(base, lost, current)
    assert res.plan.key_map == {"items": {(4,): (6,)}}
    rows = Db(current).tables["items"]
    assert rows[(5,)]["name"] == "written after the plan" and rows[(6,)]["name"] == "lost"


def test_a_write_that_fails_rolls_everything_back(tmp_path):
    base, lost, current = make(
        tmp_path, ITEMS, ITEMS_BASE,
        lost_sql="DELETE FROM items WHERE id = 2; INSERT INTO items(name, qty) VALUES ('lost', 500)",
        # CURRENT's schema gained a CHECK that LOST's new row breaks.
        current_schema=ITEMS.replace("qty INTEGER", "qty INTEGER CHECK (qty < 100)"),
    )
    before = file_digest(current)
    with pytest.raises(MulliganError) as exc:
        apply_recovery(base, lost, current)
    assert "rolled back" in exc.value.one_line()
    assert file_digest(current) == before


def test_orphans_current_already_had_are_reported_not_fatal(tmp_path):
    schema = "CREATE TABLE a(id INTEGER PRIMARY KEY); CREATE TABLE b(id INTEGER PRIMARY KEY, a_id REFERENCES a(id));"
    base, lost, current = make(tmp_path, schema, "INSERT INTO a VALUES (1);",
                               lost_sql="INSERT INTO b VALUES (1, 1)")
    conn = connect(current)
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("INSERT INTO b VALUES (2, 99)")
    conn.close()
    res = apply_recovery(base, lost, current)
    assert len(res.preexisting_fk_violations) == 1
    assert any("foreign-key violation" in w for w in res.plan.warnings)
    assert (1,) in Db(current).tables["b"]


def test_a_lost_update_pointing_at_a_remapped_lost_row_follows_its_new_key(tmp_path):
    schema = ("CREATE TABLE users(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT);"
              "CREATE TABLE posts(id INTEGER PRIMARY KEY AUTOINCREMENT, author_id REFERENCES users(id), title TEXT);")
    plan, db = merged(tmp_path, schema,
                      "INSERT INTO users(name) VALUES ('a'); INSERT INTO posts(author_id, title) VALUES (1, 'p');",
                      lost_sql="INSERT INTO users(name) VALUES ('lost b'); UPDATE posts SET author_id = 2 WHERE id = 1",
                      current_sql="INSERT INTO users(name) VALUES ('current b')")
    assert plan.conflicts == []
    assert db.tables["posts"][(1,)]["author_id"] == plan.key_map["users"][(2,)][0] == 3


HABTM = """
CREATE TABLE posts(id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT);
CREATE TABLE tags(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT);
CREATE TABLE posts_tags(post_id INTEGER REFERENCES posts(id), tag_id INTEGER REFERENCES tags(id));
"""


def test_a_keyless_join_table_is_merged_as_rows_following_remapped_parents(tmp_path):
    plan, db = merged(
        tmp_path, HABTM,
        "INSERT INTO posts(title) VALUES ('p1'); INSERT INTO tags(name) VALUES ('t1'), ('t2');"
        "INSERT INTO posts_tags VALUES (1, 1), (1, 2);",
        lost_sql="INSERT INTO posts(title) VALUES ('lost p2'); INSERT INTO posts_tags VALUES (2, 1);"
                 "DELETE FROM posts_tags WHERE tag_id = 2; INSERT INTO posts_tags VALUES (1, 1);",
        current_sql="INSERT INTO posts(title) VALUES ('current p2'); INSERT INTO posts_tags VALUES (2, 2);",
    )
    assert plan.key_map["posts"] == {(2,): (3,)}
    assert db.tables["posts_tags"] == {(1, 1): 2, (2, 2): 1, (3, 1): 1}
    assert "posts_tags" not in plan.merge.skipped_tables


def test_a_keyless_row_both_sides_added_is_not_doubled(tmp_path):
    plan, db = merged(tmp_path, HABTM, "INSERT INTO posts(title) VALUES ('p1'); INSERT INTO tags(name) VALUES ('t1');",
                      lost_sql="INSERT INTO posts_tags VALUES (1, 1)", current_sql="INSERT INTO posts_tags VALUES (1, 1)")
    assert db.tables["posts_tags"] == {(1, 1): 1}
    assert [r.status for r in plan.rows] == ["present"]


def test_a_unique_value_moved_from_one_row_to_another_is_replayed_in_an_order_that_works(tmp_path):
    schema = "CREATE TABLE users(id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT UNIQUE);"
    plan, db = merged(tmp_path, schema, "INSERT INTO users(username) VALUES ('ann'), ('bob');",
                      # bob (2) takes 'ann' after ann (1) renamed herself: row 2's update must run second
                      lost_sql="UPDATE users SET username = 'anna' WHERE id = 1; UPDATE users SET username = 'ann' WHERE id = 2")
    assert plan.conflicts == []
    assert {k[0]: r["username"] for k, r in db.tables["users"].items()} == {1: "anna", 2: "ann"}


def test_a_unique_value_swapped_between_rows_is_a_conflict(tmp_path):
    schema = "CREATE TABLE users(id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT UNIQUE);"
    plan, db = merged(tmp_path, schema, "INSERT INTO users(username) VALUES ('ann'), ('bob');",
                      lost_sql="UPDATE users SET username = 'tmp' WHERE id = 1; UPDATE users SET username = 'ann' WHERE id = 2;"
                               "UPDATE users SET username = 'bob' WHERE id = 1")
    assert {c.kind for c in plan.conflicts} == {"unique"}
    assert {k[0]: r["username"] for k, r in db.tables["users"].items()} == {1: "ann", 2: "bob"}


def test_a_table_without_autoincrement_is_flagged_as_having_no_counter(tmp_path):
    plan, _ = merged(tmp_path, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);", "INSERT INTO t VALUES (1, 'a');",
                     lost_sql="INSERT INTO t VALUES (2, 'lost')")
    assert any("no counter" in w and "t" in w for w in plan.warnings)


def test_the_same_recovery_applied_twice_is_refused_unless_asked_again(tmp_path):
    from mulligan.errors import GuardRefused

    base, lost, current = make(tmp_path, ITEMS, ITEMS_BASE, lost_sql="INSERT INTO items(name) VALUES ('lost')",
                               current_sql="INSERT INTO items(name) VALUES ('current')")
    apply_recovery(base, lost, current)
    plan = plan_recovery(base, lost, current)
    assert plan.merge.already_applied is not None
    assert any("already merged" in w for w in plan.warnings)
    before = Db(current).tables
    with pytest.raises(GuardRefused):
        apply_recovery(base, lost, current)
    assert Db(current).tables == before
    apply_recovery(base, lost, current, RecoveryOptions(again=True))
    assert [r["name"] for r in Db(current).tables["items"].values()].count("lost") == 2


def test_a_child_referring_to_a_conflicting_parent_by_name_never_falls_onto_currents_row_of_that_name(tmp_path):
    schema = ("CREATE TABLE users(id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT UNIQUE, email TEXT);"
              "CREATE TABLE notes(id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT REFERENCES users(username), body TEXT);")
    plan, db = merged(tmp_path, schema, "INSERT INTO users(username) VALUES ('ann');",
                      lost_sql="INSERT INTO users(username, email) VALUES ('zoe', 'z@lost');"
                               "INSERT INTO notes(owner, body) VALUES ('zoe', 'mine')",
                      current_sql="INSERT INTO users(username, email) VALUES ('zoe', 'z@other')")  # another zoe
    assert {(c.table, c.kind) for c in plan.conflicts} == {("users", "unique"), ("notes", "parent-conflict")}
    assert db.tables["notes"] == {}


def test_a_column_current_gained_after_the_mistake_takes_its_default_in_replayed_rows(tmp_path):
    base, lost, current = make(tmp_path, ITEMS, ITEMS_BASE, lost_sql="INSERT INTO items(name) VALUES ('lost')")
    conn = connect(current)
    conn.execute("ALTER TABLE items ADD COLUMN color TEXT NOT NULL DEFAULT 'red';"
                 "ALTER TABLE items ADD COLUMN label TEXT GENERATED ALWAYS AS (name || '!') VIRTUAL;")
    conn.close()
    apply_recovery(base, lost, current)
    conn = connect(current)
    assert conn.execute("SELECT name, color, label FROM items WHERE id = 4").fetchall() == [("lost", "red", "lost!")]


def test_a_table_current_does_not_have_is_reported_not_merged(tmp_path):
    plan, _ = merged(tmp_path, ITEMS, ITEMS_BASE, lost_sql="CREATE TABLE extra(id INTEGER PRIMARY KEY); INSERT INTO extra VALUES (1)")
    assert plan.merge.skipped_tables == {"extra": "table does not exist in CURRENT"}
    assert any("extra" in w for w in plan.warnings)


def test_tables_referring_to_each_other_are_remapped_together(tmp_path):
    schema = ("CREATE TABLE users(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT,"
              " pinned_post INTEGER REFERENCES posts(id) DEFERRABLE INITIALLY DEFERRED);"
              "CREATE TABLE posts(id INTEGER PRIMARY KEY AUTOINCREMENT, author_id INTEGER REFERENCES users(id), title TEXT);")
    plan, db = merged(
        tmp_path, schema, "INSERT INTO users(name) VALUES ('a'); INSERT INTO posts(author_id, title) VALUES (1, 'p1');",
        lost_sql="BEGIN; INSERT INTO users(name, pinned_post) VALUES ('lost u2', 2);"
                 "INSERT INTO posts(author_id, title) VALUES (2, 'lost p2'); COMMIT;",
        current_sql="INSERT INTO users(name) VALUES ('current u2'); INSERT INTO posts(author_id, title) VALUES (2, 'current p2');",
    )
    u, p = plan.key_map["users"][(2,)][0], plan.key_map["posts"][(2,)][0]
    assert (u, p) == (3, 3)
    assert db.tables["users"][(u,)]["pinned_post"] == p and db.tables["posts"][(p,)]["author_id"] == u
    assert db.tables["users"][(2,)]["name"] == "current u2" and db.tables["posts"][(2,)]["author_id"] == 2


def test_names_that_need_quoting_are_merged_like_any_other(tmp_path):
    schema = ('CREATE TABLE "user data"("id" INTEGER PRIMARY KEY AUTOINCREMENT, "select" TEXT UNIQUE, "we""ird" TEXT);'
              'CREATE TABLE "order"(id INTEGER PRIMARY KEY AUTOINCREMENT, "by" INTEGER REFERENCES "user data"(id), "from" TEXT);')
    plan, db = merged(tmp_path, schema, "INSERT INTO \"user data\"(\"select\") VALUES ('a');",
                      lost_sql="INSERT INTO \"user data\"(\"select\", \"we\"\"ird\") VALUES ('b', 'x''y');"
                               "INSERT INTO \"order\"(\"by\", \"from\") VALUES (2, 'lost')",
                      current_sql="INSERT INTO \"user data\"(\"select\") VALUES ('c');"
                                  "INSERT INTO \"order\"(\"by\", \"from\") VALUES (2, 'current')")
    new_user = plan.key_map["user data"][(2,)][0]
    assert db.tables["user data"][(new_user,)] == {"id": new_user, "select": "b", 'we"ird': "x'y"}
    assert db.tables["order"][plan.key_map["order"][(1,)]]["by"] == new_user


def test_the_foreign_key_check_rolls_back_a_merge_that_would_leave_orphans(tmp_path):
    """The last line of defence: were the plan ever wrong, nothing it wrote is kept."""
    from mulligan.engines.sqlite.merge_apply import apply_on_file
    from mulligan.engines.sqlite.merge_diff import read_lost_changes
    from mulligan.engines.sqlite.merge_model import Write
    from mulligan.errors import IntegrityError

    schema = ("CREATE TABLE users(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT);"
              "CREATE TABLE posts(id INTEGER PRIMARY KEY AUTOINCREMENT, author_id INTEGER REFERENCES users(id));")
    base, lost, current = make(tmp_path, schema, "INSERT INTO users(name) VALUES ('a'), ('b');"
                               "INSERT INTO posts(author_id) VALUES (1);",
                               lost_sql="INSERT INTO users(name) VALUES ('c')")
    before = file_digest(current)

    def sabotage(plan):  # a wrong plan: delete a user who still has a post
        plan.writes.insert(0, Write("users", "delete", (1,), old={"id": 1, "name": "a"}))

    with pytest.raises(IntegrityError) as exc:
        apply_on_file(current, read_lost_changes(base, lost), accept=sabotage)
    assert "rolled back" in exc.value.one_line()
    assert file_digest(current) == before


def test_a_cell_merge_that_would_make_two_rows_equal_on_a_unique_pair_is_a_conflict(tmp_path):
    schema = "CREATE TABLE slots(id INTEGER PRIMARY KEY, day INTEGER, room TEXT, UNIQUE (day, room));"
    plan, db = merged(tmp_path, schema, "INSERT INTO slots VALUES (1, 3, 'y'), (2, 1, 'x');",
                      lost_sql="UPDATE slots SET room = 'x' WHERE id = 1; UPDATE slots SET day = 2 WHERE id = 2",
                      current_sql="UPDATE slots SET day = 2 WHERE id = 1")  # row 1 would merge into (2, 'x')
    assert [c.kind for c in plan.conflicts] == ["unique"]
    rows = sorted((r["day"], r["room"]) for r in db.tables["slots"].values())
    assert len(set(rows)) == 2
