"""The command-line contract: configuration lookup, global options anywhere, stdout only for reports."""

import json
import os
import subprocess
import sys

from conftest import make_db


def run(cwd, *args, env=None):
    e = dict(os.environ)
    e.pop("MULLIGAN_CONFIG", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "mulligan", *args], cwd=cwd, capture_output=True, text=True, env=e)


def test_init_creates_config_and_vault_beside_it(tmp_path):
    r = run(tmp_path, "init")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mulligan.toml").exists()
    assert (tmp_path / ".mulligan" / "vault" / "config").exists()


def test_init_never_clobbers_an_existing_vault(tmp_path):
    run(tmp_path, "init")
    db = make_db(tmp_path / "app.db")
    assert run(tmp_path, "protect", db, "--name", "app", "--env", "test").returncode == 0
    assert run(tmp_path, "snapshot", "app").returncode == 0
    before = sorted(p.name for p in (tmp_path / ".mulligan" / "vault").rglob("*"))
    r = run(tmp_path, "init")
    assert r.returncode == 0
    assert sorted(p.name for p in (tmp_path / ".mulligan" / "vault").rglob("*")) == before
    assert "app" in (tmp_path / "mulligan.toml").read_text()


def test_init_with_a_vault_url_uses_it(tmp_path):
    r = run(tmp_path, "init", "--vault", str(tmp_path / "elsewhere"))
    assert r.returncode == 0
    assert (tmp_path / "elsewhere" / "config").exists()


def test_global_options_work_before_or_after_the_command(project):
    db = make_db(project.dir / "app.db")
    project.protect(db)
    a = project.run("--json", "targets")
    b = project.run("targets", "--json")
    assert a.code == b.code == 0
    assert json.loads(a.out)["targets"][0]["name"] == json.loads(b.out)["targets"][0]["name"] == "app"
    c = project.run("targets", "--config", str(project.config_path), "-q", "--json")
    assert c.code == 0 and json.loads(c.out)["targets"]


def test_config_comes_from_the_flag_then_the_environment_then_the_working_directory(project, tmp_path):
    db = make_db(project.dir / "app.db")
    project.protect(db)
    other = tmp_path / "other"
    other.mkdir()
    assert run(other, "--json", "--config", str(project.config_path), "targets").returncode == 0
    r = run(other, "--json", "targets", env={"MULLIGAN_CONFIG": str(project.config_path)})
    assert r.returncode == 0 and json.loads(r.stdout)["targets"][0]["name"] == "app"
    assert run(other, "targets").returncode == 1


def test_configuration_in_a_parent_folder_is_never_picked_up(project):
    child = project.dir / "sub"
    child.mkdir()
    r = run(child, "targets")
    assert r.returncode == 1 and "no configuration" in r.stderr


def test_stdout_carries_only_the_report_and_narration_goes_to_stderr(project):
    db = make_db(project.dir / "app.db")
    project.protect(db, env="production")
    project.run("snapshot", "app")
    r = project.run("--json", "restore", "app", "--latest", "--to", "copy.db")
    assert r.code == 0
    json.loads(r.out)  # nothing but JSON
    assert "personal data" in r.err


def test_errors_in_json_mode_are_json_on_stdout_and_one_line_on_stderr(project):
    r = project.run("--json", "snapshot", "nope")
    assert r.code == 1
    assert json.loads(r.out)["error"] == "config"
    assert len(r.err.strip().splitlines()) == 1


def test_protect_refuses_a_database_that_already_is_another_target(project):
    db = make_db(project.dir / "app.db")
    assert project.run("protect", db, "--name", "one", "--env", "test").code == 0
    r = project.run("protect", db, "--name", "two", "--env", "test")
    assert r.code == 3


def test_protect_rejects_an_unknown_environment_as_usage(project):
    db = make_db(project.dir / "app.db")
    assert project.run("protect", db, "--name", "one", "--env", "prod").code == 2


def test_snapshot_ids_are_accepted_by_unique_prefix(project):
    db = make_db(project.dir / "app.db")
    project.protect(db)
    sid = project.run("--json", "snapshot", "app").json["id"]
    r = project.run("restore", "app", "--snapshot", sid[:6], "--to", "c.db")
    assert r.code == 0, r.err


def test_restore_at_a_time_picks_the_newest_point_at_or_before_it(project):
    import time

    db = make_db(project.dir / "app.db")
    project.protect(db)
    first = project.run("--json", "snapshot", "app").json
    time.sleep(1.1)
    second = project.run("--json", "snapshot", "app").json
    r = project.run("--json", "restore", "app", "--at", first["time"], "--to", "a.db")
    assert r.json["snapshot"]["id"] == first["id"]
    r = project.run("--json", "restore", "app", "--at", "-0s", "--to", "b.db")
    assert r.json["snapshot"]["id"] == second["id"]
    r = project.run("restore", "app", "--at", "2001-01-01T00:00:00Z", "--to", "c.db")
    assert r.code == 1 and "no restore point" in r.err


def test_a_state_path_that_does_not_exist_is_an_error_not_a_usage_error(project):
    r = project.run("diff", "missing-a.db", "missing-b.db")
    assert r.code == 1 and "no file at" in r.err and len(r.err.strip().splitlines()) == 1


def test_narration_prints_names_as_they_are_and_needs_no_rich_when_piped(tmp_path):
    """A warning about a path with brackets in it keeps them (rich would read them as markup),
    and narration to a pipe does not load rich."""
    code = ("import sys\nfrom mulligan.cli.context import Ctx\n"
            "c = Ctx(verbosity=1)\nc.warn('/data/[bold]x[/]/app.db is old')\nc.say('kept [vault] at v')\nc.debug('[dim]d')\n"
            "print('rich.console' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stderr.splitlines() == ["warning: /data/[bold]x[/]/app.db is old", "kept [vault] at v", "[dim]d"]
    assert r.stdout.strip() == "False"


def test_narration_on_a_terminal_is_styled_and_keeps_brackets():
    import io

    from rich.console import Console

    from mulligan.cli.context import Ctx

    buf = io.StringIO()
    c = Ctx(verbosity=1)
    c._err = Console(file=buf, force_terminal=True, width=100)
    c.warn("/data/[bold]x[/] old")
    c.debug("d [x]")
    assert buf.getvalue() == "\x1b[1;33mwarning: \x1b[0m/data/[bold]x[/] old\n\x1b[2md [x]\x1b[0m\n"
