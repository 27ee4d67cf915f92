"""The interactive confirmation, through a real pseudo-terminal."""

from __future__ import annotations

import os
import sys

import pexpect
import pytest
from conftest import dump
from test_inplace import content, quiet_target


def spawn(project, *args: str) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if k != "MULLIGAN_CONFIG"}
    return pexpect.spawn(sys.executable, ["-m", "mulligan", *args], cwd=str(project.dir), env=env,
                         encoding="utf-8", timeout=60, dimensions=(40, 160))


def finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


@pytest.fixture
def app(project):
    project.db = quiet_target(project, later=4)
    return project


def test_production_is_replaced_when_its_name_is_typed_at_the_prompt(app):
    child = spawn(app, "restore", "app", "--latest", "--in-place")
    child.expect("PRODUCTION")
    child.expect(r"Type the target's name to replace production database 'app' \[no\]: ")
    child.sendline("app")
    assert finish(child) == 0
    assert dump(app.db) == app.state_at_snapshot


@pytest.mark.parametrize("answer", ["", "y", "yes", "App"])
def test_the_production_prompt_refuses_anything_but_the_exact_name(app, answer):
    before = content(app.db)
    child = spawn(app, "restore", "app", "--latest", "--in-place")
    child.expect(r"\[no\]: ")
    child.sendline(answer)
    assert finish(child) == 3
    assert content(app.db) == before


def test_end_of_input_at_the_prompt_is_a_refusal_and_is_logged(app):
    before = content(app.db)
    child = spawn(app, "restore", "app", "--latest", "--in-place")
    child.expect(r"\[no\]: ")
    child.sendeof()
    assert finish(child) == 3
    assert content(app.db) == before
    last = app.run("--json", "audit", "app").json["entries"][-1]
    assert last["outcome"] == "refused" and "without a name" in last["detail"]["reason"]


def test_yes_alone_is_refused_even_at_a_terminal(app):
    before = content(app.db)
    child = spawn(app, "restore", "app", "--latest", "--in-place", "--yes")
    child.expect("--yes alone never replaces")
    assert finish(child) == 3
    assert content(app.db) == before


def test_a_staging_database_asks_yes_or_no_with_no_as_the_default(project):
    db = quiet_target(project, "stage", "staging", rows=5, later=1)
    before = content(db)
    child = spawn(project, "restore", "stage", "--latest", "--in-place")
    child.expect(r"Replace staging database 'stage'\? \[y/N\]: ")
    child.sendline("")
    assert finish(child) == 3
    assert content(db) == before
    child = spawn(project, "restore", "stage", "--latest", "--in-place")
    child.expect(r"\[y/N\]: ")
    child.sendline("y")
    assert finish(child) == 0
