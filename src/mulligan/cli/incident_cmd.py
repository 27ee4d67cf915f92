"""incident open|show|note|summary|close, postmortem, demo. (The `incidents` listing lives in watch_cmd.)"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError
from ..ops import incidents as inc_ops
from ..ops import postmortem as pm_ops
from ..ops import summary as summary_ops
from ..ops.audit import read as read_audit
from ..report.tables import table
from .context import Ctx, pass_ctx


def _load(ctx: Ctx, incident_id: str) -> dict:
    inc = inc_ops.get(ctx.ws.vault, incident_id)
    ctx.audit_target = ctx.config.targets.get(inc.get("target_name")) or {
        "name": inc.get("target_name"), "id": inc.get("target_id"), "env": None}
    return inc


@click.group()
def incident():
    """The incident record: open, show, note, impact, summary, close."""


@incident.command("open")
@click.argument("name")
@click.option("--title", required=True, help="One line saying what is going on.")
@click.option("--kind", type=click.Choice(["manual", "mass-change", "rollback"]), default="manual", show_default=True)
@click.option("--base", metavar="STATE", help="For recover --incident: the old state that was restored by mistake.")
@click.option("--lost", metavar="STATE", help="For recover --incident: the last good state before the mistake.")
@pass_ctx
def open_(ctx: Ctx, name, title, kind, base, lost):
    """Open an incident on target NAME by hand."""
    from ..ops.states import resolve_state

    target = ctx.ws.target(name)
    ctx.audit_target = target
    for spec in filter(None, (base, lost)):
        resolve_state(spec, ctx.ws.vault, target)  # a typo fails now, not at recover time
    inc = inc_ops.open_incident(ctx.ws.vault, target, kind=kind, title=title, base=base, lost=lost)
    if ctx.json:
        return ctx.emit_json(inc)
    click.echo(f"opened incident {inc['id']} on {name}: {title}")


@incident.command()
@click.argument("incident_id", metavar="ID")
@pass_ctx
def show(ctx: Ctx, incident_id):
    """The record with its timeline assembled from facts (UTC)."""
    ctx.audit = False
    inc = _load(ctx, incident_id)
    timeline = inc_ops.timeline_for(ctx.ws.vault, inc)
    if ctx.json:
        return ctx.emit_json({"incident": inc, "timeline": timeline})
    s = summary_ops.build(inc)
    click.echo(s.text)
    t = table("time (UTC)", "event", "detail", title="Timeline")
    for e in timeline:
        t.add_row(e["time"], e["event"], str(e.get("detail") or ""))
    ctx.out.print(t)


@incident.command()
@click.argument("incident_id", metavar="ID")
@click.argument("text", nargs=-1, required=True)
@pass_ctx
def note(ctx: Ctx, incident_id, text):
    """Add a note (it joins the timeline)."""
    inc = inc_ops.add_note(ctx.ws.vault, _load(ctx, incident_id), " ".join(text))
    if ctx.json:
        return ctx.emit_json(inc)
    click.echo(f"noted on {inc['id']}")


@incident.command()
@click.argument("incident_id", metavar="ID")
@click.option("--send", is_flag=True, help="Post it to [alerts] webhook (JSON with a Slack-compatible text field).")
@pass_ctx
def summary(ctx: Ctx, incident_id, send):
    """A short text for the team channel: what happened, data at risk, users, status, next step."""
    ctx.audit = send
    inc = _load(ctx, incident_id)
    s = summary_ops.build(inc)
    out = s.to_json() | {"sent": False}
    if send:
        webhook = ctx.config.section("alerts").get("webhook")
        if not webhook:
            raise UsageError("no webhook configured", unchanged="nothing was posted",
                             hint='add [alerts] webhook = "https://..." to mulligan.toml')
        try:
            status = summary_ops.send(webhook, s.text)
        except summary_ops.WebhookFailed as exc:
            inc_ops.record_alert(ctx.ws.vault, inc, channel="team webhook", ok=False, detail=exc.message)
            if not ctx.json:
                click.echo(s.text)
            raise
        inc_ops.record_alert(ctx.ws.vault, inc, channel="team webhook", ok=True, detail="incident summary")
        out |= {"sent": True, "webhook_status": status}
        ctx.say(f"posted the summary to the team webhook (HTTP {status})")
    if ctx.json:
        return ctx.emit_json(out)
    click.echo(s.text)


@incident.command("impact")
@click.argument("incident_id", metavar="ID")
@click.option("--base", metavar="STATE", help="The state production was rolled back to (default: from the record).")
@click.option("--lost", metavar="STATE", help="The last good state before the mistake (default: from the record).")
@click.option("--users-table", metavar="T", help="The table of users (default: configured, or auth_user, users, accounts).")
@pass_ctx
def impact_(ctx: Ctx, incident_id, base, lost, users_table):
    """Which users lost data: impact between the incident's BASE and LOST, kept in the record."""
    from ..ops.impact import impact
    from ..report.diff import impact_json, render_impact_text

    inc = _load(ctx, incident_id)
    base, lost = inc_ops.recovery_states(inc, base, lost)
    res = impact(ctx.ws, ctx.ws.target(inc["target_name"]), base, lost, users_table=users_table)
    inc = inc_ops.record_impact(ctx.ws.vault, inc, impact_json(res), base=base, lost=lost)
    if ctx.json:
        return ctx.emit_json(inc["impact"])
    render_impact_text(res, ctx.out)
    click.echo(f"{inc_ops.users_affected(inc)} users potentially lost data")


@incident.command("close")
@click.argument("incident_id", metavar="ID")
@pass_ctx
def close_(ctx: Ctx, incident_id):
    """Close the incident (the record and its timeline stay)."""
    inc = _load(ctx, incident_id)
    if inc.get("status") == "closed":
        raise UsageError(f"incident {inc['id']} is already closed", unchanged="the record was left as it was")
    inc = inc_ops.close(ctx.ws.vault, inc)
    if ctx.json:
        return ctx.emit_json(inc)
    click.echo(f"closed incident {inc['id']}; draft the postmortem with 'mulligan postmortem {inc['id']}'")


def build_postmortem(ws, inc: dict) -> pm_ops.Postmortem:
    entries = [e for e in read_audit(ws.vault).entries if (e.get("target") or {}).get("id") == inc.get("target_id")]
    return pm_ops.build(inc, inc_ops.timeline_for(ws.vault, inc), entries)


def render_postmortem(pm: pm_ops.Postmortem, fmt: str) -> str:
    if fmt == "html":
        from ..report.postmortem_html import render
    else:
        from ..report.postmortem_md import render
    return render(pm)


@click.command()
@click.argument("incident_id", metavar="ID")
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md", show_default=True)
@click.option("-o", "--output", metavar="FILE", help="Write to FILE instead of standard output.")
@pass_ctx
def postmortem(ctx: Ctx, incident_id, fmt, output):
    """The blameless postmortem draft of an incident, from its facts."""
    pm = build_postmortem(ctx.ws, inc_ops.get(ctx.ws.vault, incident_id))
    text = render_postmortem(pm, fmt)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        ctx.say(f"wrote the postmortem draft to {output}")
    if ctx.json:
        return ctx.emit_json(pm.to_json() | {"output": output})
    if not output:
        click.echo(text)


@click.command()
@click.option("--dir", "directory", default="mulligan-demo", show_default=True, metavar="DIR",
              help="Where the sample app, its vault and the postmortem go (emptied first if it holds an earlier demo).")
@pass_ctx
def demo(ctx: Ctx, directory):
    """The whole story, end to end, on a sample blog that users keep writing to (under a minute).

    The narration is this command's output, so it goes to standard output; with --json
    it goes to standard error and standard output carries the facts of the run.
    """
    from ..demo.story import run_drill

    say = ctx.say if ctx.json else click.echo
    facts = run_drill(Path(directory), say=say)
    if ctx.json:
        ctx.emit_json(facts)


def register(cli: click.Group) -> None:
    cli.add_command(incident)
    cli.add_command(postmortem)
    cli.add_command(demo)
