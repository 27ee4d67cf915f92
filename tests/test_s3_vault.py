"""A vault in an S3 bucket: the whole job (snapshot under a writer, restore, verify, prune,
watch with SIGTERM and SIGKILL) through the real CLI against an S3 server on 127.0.0.1, and the
failures an object store adds (unreachable, no bucket, a damaged object)."""

from __future__ import annotations

import os
import random
import time

import pytest

from conftest import Env, Outage, dump, make_db
from mulligan.ops import setup as setup_ops
from mulligan.timeparse import from_iso, iso
from test_snapshot import assert_one_commit, start_writer
from test_watch_kit import App, Watch, configure, free_port, ids_in, make_app_db

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def s3_env(s3, tmp_path) -> Env:
    bucket = s3.new_bucket()
    setup_ops.init(tmp_path / "mulligan.toml", s3.url(bucket))
    env = Env(tmp_path)
    env.bucket = bucket
    env.s3 = s3
    return env


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def _restored(env: Env, *args: str) -> str:
    out = env.dir / f"r-{time.time_ns()}.db"
    r = env.run("restore", "app", *args, "--to", str(out))
    assert r.code == 0, r.err
    return str(out)


def _term_and_restore_latest(env: Env, w: Watch, app: App) -> list[tuple[int, float]]:
    """SIGTERM the watcher, stop the app; every commit made before the SIGTERM must restore."""
    t_term = time.time()
    assert w.term() == 0
    app.stop()
    log = app.log()
    got = set(ids_in(_restored(env, "--latest")))
    missing = [i for i, t in log if t < t_term and i not in got]
    assert not missing, f"{len(missing)} commits lost, first {missing[:3]}"
    return log


def test_snapshot_under_a_writer_restore_verify_and_prune_in_a_bucket(s3_env):
    env = s3_env
    writer = start_writer(env.dir / "app.db", project=env)
    try:
        time.sleep(0.3)
        first = env.run("snapshot", "app", "--json")
        assert first.code == 0, first.err
        time.sleep(0.3)
        second = env.run("snapshot", "app", "--json")
        assert second.code == 0, second.err
    finally:
        writer.kill()
        writer.wait()
    objects = [o["Key"] for o in env.s3.client().list_objects_v2(Bucket=env.bucket)["Contents"]]
    assert any(k.startswith("vault/packs/") for k in objects) and "vault/config" in objects
    for snap in (first.json["id"], second.json["id"]):
        assert assert_one_commit(_restored(env, "--snapshot", snap)) > 0
    v = env.run("verify", "--json")
    assert v.code == 0, v.err
    p = env.run("prune", "app", "--keep-last", "1", "--json")
    assert p.code == 0, p.err
    assert [s["id"] for s in env.run("snapshots", "app", "--json").json["snapshots"]] == [second.json["id"]]
    assert env.run("verify", "--restore-test").code == 0


def test_watch_into_a_bucket_loses_nothing_after_sigterm_and_restores_any_past_time(s3_env):
    env = s3_env
    db = make_app_db(env.dir / "app.db")
    env.protect(db)
    app = App(db, env.dir / "app.log", rate=150)
    w = Watch(env, "app")
    assert "store every 5 s" in w.text()  # an object store's default batching interval
    capturing = time.time()
    time.sleep(2.5)
    log = _term_and_restore_latest(env, w, app)
    when = random.uniform(max(capturing, log[10][1]), log[-10][1])
    at = ids_in(_restored(env, "--at", iso(when)))
    assert at == list(range(1, len(at) + 1))
    assert {i for i, t in log if t <= when - 0.3} <= set(at)
    assert not {i for i, t in log if t > when + 0.3} & set(at)


def test_watch_into_a_bucket_after_sigkill_loses_at_most_its_flush_interval(s3_env):
    env = s3_env
    db = make_app_db(env.dir / "app.db")
    env.protect(db)
    configure(env, capture={"flush_interval": "0.5s"})
    app = App(db, env.dir / "app.log", rate=200)
    w = Watch(env, "app", "--metrics-port", str(free_port()))
    time.sleep(random.uniform(1.0, 2.5))
    t_kill = time.time()
    w.kill()
    app.stop()
    got = set(ids_in(_restored(env, "--latest")))
    lost = [(i, t) for i, t in app.log() if t < t_kill and i not in got]
    assert all(t > t_kill - 1.0 for _, t in lost), f"lost commits older than a second: {lost[:5]}"
    assert sorted(got) == list(range(1, max(got) + 1))
    assert env.run("verify").code == 0


def test_an_unreachable_store_is_one_line_and_changes_nothing(s3, tmp_path):
    url = f"s3://nobody/vault?endpoint=http://127.0.0.1:{free_port()}"
    t0 = time.time()
    r = Env(tmp_path).run("init", "--vault", url)
    assert r.code == 1 and time.time() - t0 < 20
    line = one_line(r.err)
    assert "cannot read config in the vault at s3://nobody/vault" in line and "reachable" in line
    assert not (tmp_path / "mulligan.toml").exists()


def test_a_missing_bucket_is_one_line(s3, tmp_path):
    r = Env(tmp_path).run("init", "--vault", s3.url("no-such-bucket"))
    assert r.code == 1
    assert "s3://no-such-bucket/vault" in one_line(r.err)


def test_no_credentials_is_one_line_that_names_them(s3, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    r = Env(tmp_path).run("init", "--vault", s3.url(s3.new_bucket()))
    assert r.code == 1
    line = one_line(r.err)
    assert "no AWS credentials found" in line and "AWS_ACCESS_KEY_ID" in line
    assert not (tmp_path / "mulligan.toml").exists()


def test_a_store_that_ignores_conditional_writes_gets_no_vault(s3, tmp_path):
    """Some S3-compatible servers ignore If-None-Match and overwrite: put-if-absent would then
    hold nowhere (the audit log, leases). A proxy drops the header on the way; init refuses."""
    import re

    bucket = s3.new_bucket()
    proxy = Outage(int(s3.endpoint.rsplit(":", 1)[1]),
                   rewrite=lambda data: re.sub(rb"(?i)if-none-match: \*\r\n", b"", data)).up()
    try:
        r = Env(tmp_path).run("init", "--vault", f"s3://{bucket}/vault?endpoint=http://127.0.0.1:{proxy.port}")
    finally:
        proxy.down()
    assert r.code == 1
    assert "ignores conditional writes" in one_line(r.err)
    assert s3.client().list_objects_v2(Bucket=bucket).get("Contents", []) == []  # no config, no probe left


def test_an_unknown_option_in_the_url_is_a_usage_error(s3, tmp_path):
    r = Env(tmp_path).run("init", "--vault", s3.url(s3.new_bucket()) + "&colour=blue")
    assert r.code == 2 and "'colour'" in one_line(r.err)


def test_init_never_clobbers_a_vault_in_a_bucket(s3_env, tmp_path):
    other = Env(tmp_path / "other")
    (tmp_path / "other").mkdir()
    url = s3_env.s3.url(s3_env.bucket)
    r = other.run("init", "--vault", url)
    assert r.code == 0, r.err  # an existing vault is opened, not made again
    config = s3_env.s3.client().get_object(Bucket=s3_env.bucket, Key="vault/config")["Body"].read()
    from mulligan.errors import StorageError
    from mulligan.vault import Vault

    with pytest.raises(StorageError) as exc:
        Vault.create(url)
    assert "already exists" in str(exc.value)
    assert s3_env.s3.client().get_object(Bucket=s3_env.bucket, Key="vault/config")["Body"].read() == config


def test_a_damaged_pack_in_the_bucket_is_found_by_verify_and_never_restored(s3_env):
    env = s3_env
    db = make_db(env.dir / "app.db", rows=300)
    env.protect(db)
    assert env.run("snapshot", "app").code == 0
    client = env.s3.client()
    pack = next(o["Key"] for o in client.list_objects_v2(Bucket=env.bucket)["Contents"]
                if o["Key"].startswith("vault/packs/"))
    body = bytearray(client.get_object(Bucket=env.bucket, Key=pack)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket=env.bucket, Key=pack, Body=bytes(body))
    v = env.run("verify")
    assert v.code == 4 and pack.removeprefix("vault/") in v.out + v.err
    out = env.dir / "r.db"
    r = env.run("restore", "app", "--latest", "--to", str(out))
    assert r.code == 4 and not out.exists()
    one_line(r.err)


def _watch_through(proxy: Outage, bucket: str, tmp_path, **capture) -> tuple[Env, App, Watch]:
    """A project whose vault is in ``bucket`` reached through ``proxy``; an application at
    100 tx/s and a watcher storing every 0.5 s (plus ``capture`` settings)."""
    setup_ops.init(tmp_path / "mulligan.toml", f"s3://{bucket}/vault?endpoint=http://127.0.0.1:{proxy.port}")
    env = Env(tmp_path)
    db = make_app_db(env.dir / "app.db")
    env.protect(db)
    configure(env, capture={"flush_interval": "0.5s", **capture})
    return env, App(db, env.dir / "app.log", rate=100), Watch(env, "app")


@pytest.mark.parametrize("backlog", ["held", "dropped"])
def test_a_store_that_goes_away_while_watch_runs(s3, tmp_path, backlog):
    """The way to the bucket is cut for a few seconds while the application keeps writing: watch
    says capture failed once and keeps running. With room for the backlog it stores every commit
    once the store is back; past ``backlog_max_mib`` it drops them, then reads the database again
    and records the gap: the latest state is still whole, and no restore invents a commit."""
    bucket = s3.new_bucket()
    proxy = Outage(int(s3.endpoint.rsplit(":", 1)[1])).up()
    try:
        env, app, w = _watch_through(proxy, bucket, tmp_path, backlog_max_mib=256 if backlog == "held" else 0.01)
        time.sleep(1.0)
        t_down = time.time()
        proxy.down()
        assert w.wait_for("capture failed", 20), w.text()
        if backlog == "dropped":
            # Down until a failed flush held more than the bound: the first failure may be the
            # segment's write, after its packs were stored (nothing held, nothing to drop).
            assert w.wait_for("dropped from memory", 20), w.text()
        else:
            time.sleep(1.0)
        proxy.up()
        t_up = time.time()
        if backlog == "dropped":
            assert w.wait_for("accepts writes again", 20), w.text()
        time.sleep(2.0)
        log = _term_and_restore_latest(env, w, app)
        assert "everything seen is stored" in w.text()
        gaps = env.run("status", "app", "--json").json["targets"][0]["coverage"]["gaps"]
        assert "capture is working again" in w.text() and "run the command again" not in w.text(), w.text()
        if backlog == "held":
            assert gaps == [] and "dropped" not in w.text()
            return
        assert "dropped from memory" in w.text()
        assert len(gaps) == 1 and "could not be written" in gaps[0]["reason"]
        assert t_down - 1.0 <= from_iso(gaps[0]["from"]).timestamp() <= t_up + 1.0
        # Inside the gap: a consistent prefix of the application's commits, none made after the time.
        when = (from_iso(gaps[0]["from"]).timestamp() + from_iso(gaps[0]["to"]).timestamp()) / 2
        times = dict(log)
        at = ids_in(_restored(env, "--at", iso(when)))
        assert at == list(range(1, len(at) + 1))
        assert not [i for i in at if i in times and times[i] > when + 0.3]
        assert env.run("verify").code == 0
    finally:
        proxy.down()


@pytest.mark.parametrize("lost", [1, 6])
def test_a_write_that_landed_but_whose_answer_was_lost_is_not_written_again(s3, tmp_path, lost):
    """The store takes a segment, then the connection drops before its answer: the client's
    retry finds the key taken. Once (the client retries within the request), or on every retry
    (the flush fails and the next flush writes the segment again, with more commits seen
    meanwhile). Either way the bytes there are the segment being written, so the write stands
    and capture goes on; before, every later flush was refused on that key and commits were
    lost even after SIGTERM."""
    bucket = s3.new_bucket()
    target: list[bytes] = []

    def lose(piece: bytes) -> bool:
        line = piece.split(b"\r\n", 1)[0]
        if not piece.startswith(b"PUT ") or b"/capture/" not in line:
            return False
        if not target:
            target.append(line)
        return line == target[0] and proxy.lost_replies < lost

    proxy = Outage(int(s3.endpoint.rsplit(":", 1)[1]), lose_reply=lose).up()
    try:
        env, app, w = _watch_through(proxy, bucket, tmp_path)
        deadline = time.time() + 30
        while proxy.lost_replies < lost and time.time() < deadline:
            time.sleep(0.1)
        assert proxy.lost_replies == lost
        time.sleep(3.0)
        _term_and_restore_latest(env, w, app)
        assert ("capture failed" in w.text()) == (lost > 1), w.text()
        assert w.text().count("capture failed") <= 1, w.text()
        assert env.run("status", "app", "--json").json["targets"][0]["coverage"]["gaps"] == []
        assert env.run("verify").code == 0
    finally:
        proxy.down()


def test_a_stop_while_the_store_is_away_says_what_was_not_stored_and_exits_1(s3, tmp_path):
    """SIGTERM while the bucket cannot be reached: the commits seen since the last stored flush
    cannot be stored. watch says so in one line and exits 1 (a process manager sees a failed
    stop, not a clean one); once the store is back, the next watch records the gap and the
    latest state is whole."""
    bucket = s3.new_bucket()
    proxy = Outage(int(s3.endpoint.rsplit(":", 1)[1])).up()
    try:
        env, app, w = _watch_through(proxy, bucket, tmp_path)
        time.sleep(1.0)
        proxy.down()
        assert w.wait_for("capture failed", 20), w.text()
        assert w.term() == 1
        text = w.text()
        assert "watch stopped with commits of app seen but not stored" in text, text
        assert "Traceback" not in text, text
        proxy.up()
        w2 = Watch(env, "app")
        time.sleep(1.0)
        _term_and_restore_latest(env, w2, app)
        gaps = env.run("status", "app", "--json").json["targets"][0]["coverage"]["gaps"]
        assert len(gaps) == 1, gaps
    finally:
        proxy.down()


def test_prune_in_a_bucket_removes_the_packs_nothing_references(s3_env):
    """Prune on an object store deletes dead packs several at once: exactly those (here, packs a
    writer killed before its index landed would leave), with the bytes the listing gave; what
    is kept still verifies and restores."""
    env = s3_env
    db = make_db(env.dir / "app.db", rows=400)
    env.protect(db)
    assert env.run("snapshot", "app").code == 0
    client = env.s3.client()

    def packs():
        return {o["Key"]: o["Size"] for o in client.list_objects_v2(Bucket=env.bucket, Prefix="vault/packs/")
                .get("Contents", [])}

    real = packs()
    body = client.get_object(Bucket=env.bucket, Key=next(iter(real)))["Body"].read()
    for i in range(6):  # never indexed: left by interrupted writes
        pid = os.urandom(16).hex()
        client.put_object(Bucket=env.bucket, Key=f"vault/packs/{pid[:2]}/{pid}", Body=body[: 1000 * (i + 1)])
    before = packs()
    p = env.run("prune", "app", "--keep-last", "1", "--json")
    assert p.code == 0, p.err
    after = packs()
    gone = set(before) - set(after)
    assert after == real and len(gone) == 6
    assert p.json["packs_removed"] == 6 and p.json["bytes_freed"] == sum(before[k] for k in gone)
    assert env.run("verify").code == 0
    assert dump(_restored(env, "--latest")) == dump(db)


def test_a_store_that_never_answers_holds_a_small_request_seconds_and_a_large_one_longer(monkeypatch):
    """A store that takes the connection and the request but never answers: a request ends at
    its timeout. Listings, stats, deletes and small writes get the short timeout (10 s; 1 s here)
    and a short retry window (half a second here: no second try), large writes the long one (a
    minute; 4 s here), so a hung store holds the watcher's loop seconds, while a large pack still
    has time to move over a slow link."""
    import socket
    import threading

    from mulligan.errors import StorageError
    from mulligan.storage import s3 as s3mod

    monkeypatch.setattr(s3mod, "TIMEOUT_SMALL", "1s")
    monkeypatch.setattr(s3mod, "RETRY_WINDOW_SMALL", 0.5)
    monkeypatch.setattr(s3mod, "TIMEOUT", "4s")
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)
    held = []

    def swallow():
        while True:
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            held.append(conn)
            threading.Thread(target=drain, args=(conn,), daemon=True).start()

    def drain(conn):
        try:
            while conn.recv(1 << 16):
                pass
        except OSError:
            pass

    threading.Thread(target=swallow, daemon=True).start()
    try:
        st = s3mod.S3Storage(f"s3://b/v?endpoint=http://127.0.0.1:{lst.getsockname()[1]}")
        for call in (lambda: st.put("capture/x", b"small"), lambda: list(st.list("capture/")),
                     lambda: st.stat("capture/x"), lambda: st.delete("capture/x")):
            t0 = time.monotonic()
            with pytest.raises(StorageError):
                call()
            assert time.monotonic() - t0 < 3.0
        t0 = time.monotonic()
        with pytest.raises(StorageError):
            st.put("packs/big", os.urandom(s3mod.SMALL + 1))
        assert time.monotonic() - t0 >= 3.5
    finally:
        lst.close()
        for c in held:
            c.close()
