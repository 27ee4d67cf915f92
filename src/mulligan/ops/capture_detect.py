"""Rollback detection state of one capture, and the response when production went back in time.

Kept apart from :mod:`ops.capture` (which reads and stores commits): the last good
observation and point, the mass rewrites seen since, the comparison with older
restore points (ops/detect.py has the signals), and what happens on detection:
incident, counters raised, alert, audit entries.
"""

from __future__ import annotations

import time

from ..engines.sqlite.capture import Observation, OwnWriteFailed
from ..errors import MulliganError
from ..timeparse import iso
from . import capture_store as cs
from . import detect
from . import incidents as inc_mod


class RollbackDetector:
    def __init__(self, cap):
        self.cap = cap
        self.obs: Observation | None = None  # at the last good point
        self.clean_point: tuple | None = None  # (point id, seen time) of the last good point
        self.suspects: list[tuple] = []  # mass rewrites since: (point before, its time, point)
        self.deferred = False
        self.own_generation: int | None = None  # the generation the watcher last wrote
        self.mass: tuple | None = None  # (ids just before, ids just after) the first mass rewrite
        self.pre: dict = {}  # page -> chunk id at the last good point, for pages written since
        self.pre_len = 0
        self.matcher = detect.SnapshotMatcher(cap.vault)
        self.unsaved: dict[str, dict] = {}  # incidents the vault refused to store, by id (store_unsaved)

    def check(self, obs: Observation, *, mass: bool, where: str, lkg: tuple | None = None,
              discontinuity: bool = False, final: bool = False, states: list | None = None,
              lkg_ids: list | None = None) -> None:
        """Compare ``obs`` (the state now) with the last good one; respond to a rollback; the
        state now becomes the last good one."""
        cap = self.cap
        sig = detect.compare(self.obs, obs, self.own_generation)
        suspicious = mass or discontinuity or bool(self.suspects)
        if sig.any and not suspicious and not final and not self.deferred:
            # Signals but the commit that caused them may not be captured yet: look again next poll,
            # so the last good point is exact.
            self.deferred = True
            return
        rolled_to, score = None, 0.0
        if suspicious or sig.strong:
            m, score, lkg_score = None, 0.0, 0.0
            if self.mass is not None:
                before_ids, after = self.mass
                m, score = self.match(obs, after)
                lkg_score = self.matcher.score(after, before_ids)
            elif lkg_ids is not None:
                # After a discontinuity: the state now, and the main file alone (a copied file before
                # the application wrote on top of it); keep the one that matches an older point best.
                for cand in states or [cap.ids]:
                    cm, cs_ = self.match(obs, cand)
                    cl = self.matcher.score(cand, lkg_ids)
                    if cm is not None and cs_ - cl > score - lkg_score:
                        m, score, lkg_score = cm, cs_, cl
            else:
                m, score = self.match(obs, cap.ids)
                lkg_score = self.lkg_score()
            if m is not None and score >= detect.MATCH_MIN and score > lkg_score:
                rolled_to = m
            cap.log("debug", f"{cap.target.name}: best older match {m.id if m else None} ({score:.2f}), "
                             f"last good state {lkg_score:.2f}; signals {sig.strong + sig.weak}")
        # Largest keys falling alone is what a mass DELETE does too: it is reported with a
        # rollback, never enough for one.
        is_rollback = bool(sig.strong) or (suspicious and rolled_to is not None)
        if is_rollback and sig.generation_up and not any(x.startswith("the identity stamp") for x in sig.strong):
            detect.record(cap.vault, cap.target, "in-place restore observed",
                          {"signals": sig.strong + sig.weak, "where": where})
            cap.log("notice", f"{cap.target.name}: an in-place restore by Mulligan was observed (generation "
                              "advanced); recorded, not an alarm")
            is_rollback = False
        if is_rollback:
            if lkg is None:
                lkg = (self.suspects[0][0], self.suspects[0][1]) if self.suspects else self.clean_point
            self.respond(obs, sig.strong + sig.weak, lkg, rolled_to, score, where)
        self.clean(obs)

    def _same_loss(self, rb: detect.Rollback) -> dict | None:
        """The open incident of the same loss (detect.same_loss): one not stored yet first, then
        the vault's (a vault that cannot be read has none to give)."""
        inc = detect.same_loss(reversed(self.unsaved.values()), rb)
        if inc is not None or self.cap._flush_failed is not None:
            return inc  # the vault is failing: no wait on it before the alert
        try:
            return detect.same_loss(reversed(inc_mod.list_incidents(self.cap.vault, self.cap.target.id)), rb)
        except MulliganError:
            return None

    def _store(self, inc: dict, refused: str | None = None) -> bool:
        """Store the incident; one the vault refuses is kept to store after a later flush."""
        cap = self.cap
        if refused is None:
            try:
                inc_mod.save(cap.vault, inc)
                self.unsaved.pop(inc["id"], None)
                return True
            except MulliganError as exc:
                refused = exc.message
        if inc["id"] not in self.unsaved:
            cap.log("error", f"{cap.target.name}: incident {inc['id']} could not be stored in the vault ({refused}): "
                             "it is kept in memory and stored once the vault accepts writes")
        self.unsaved[inc["id"]] = inc
        return False

    def store_unsaved(self) -> None:
        """After a flush the vault accepted: the incidents it refused before."""
        for inc in list(self.unsaved.values()):
            inc["timeline"].append({"time": iso(time.time()), "event": "incident stored",
                                    "detail": "the vault accepts writes again"})
            if self._store(inc):
                self.cap.log("notice", f"{self.cap.target.name}: incident {inc['id']} stored in the vault")
            else:
                inc["timeline"].pop()
                return

    def clean(self, obs: Observation) -> None:
        cap = self.cap
        self.obs = obs
        self.clean_point = cap.last_point
        self.suspects = []
        self.deferred = False
        self.mass = None
        self.pre = {}
        self.pre_len = len(cap.ids)

    def lkg_score(self) -> float:
        """How much the state now matches the last good state (pages rewritten with new content differ)."""
        cap = self.cap
        n_new, n_old = len(cap.ids), self.pre_len
        common = min(n_new, n_old)
        differ = sum(1 for p, old in self.pre.items() if p <= common and cap.ids[p - 1] != old)
        return (common - differ) / max(n_new, n_old, 1)

    def match(self, obs: Observation, ids: list[bytes]):
        cap = self.cap
        try:
            tids = [cap.target.id, obs.target_id] if obs else [cap.target.id]
            exclude = cap.base.id if cap.base is not None and cap.base.meta.get("reason") != "periodic" else None
            return self.matcher.best(ids, tids, before=time.time(), exclude=exclude)
        except MulliganError as exc:
            cap.log("warning", f"{cap.target.name}: could not compare with older snapshots: {exc.message}")
            return None, 0.0

    def respond(self, obs: Observation, signals: list[str], lkg, rolled_to, score, where: str,
                raise_now: bool = True) -> dict:
        """Incident, counters raised above what the lost state used, alert, audit entries."""
        cap = self.cap
        now = time.time()
        # The counters and the alert need only the database and the log: they come first. The
        # last good commit is then stored, before the incident that names it. A vault that
        # refuses writes (its disk full, its store unreachable) holds up neither, and one that
        # answers slowly does not delay them; the incident is stored once the vault accepts
        # writes (store_unsaved, after each flush). Before, the response began with the flush,
        # and a refusal ended it there, poll after poll: no alert, and new rows took the lost ids.
        refused = cap._flush_failed.message if cap._flush_failed is not None else None
        chain_base = None
        if lkg and lkg[0] and cs.is_commit_id(lkg[0]):
            chain_base = lkg[0].split(".")[0]
        elif lkg and lkg[0]:
            chain_base = lkg[0]
        rb = detect.Rollback(signals=signals, detected_at=now, last_good_point=lkg[0] if lkg else None,
                             last_good_time=lkg[1] if lkg else None, rolled_back_to=rolled_to, match=score,
                             chain_base=chain_base, detail=where)
        inc = self._same_loss(rb)
        earlier = None if inc is None else {"opened_at": inc["opened_at"], "counters": inc.get("counters") or {}}
        if inc is not None:
            detect.continue_rollback(inc, rb)
        else:
            inc = detect.open_rollback(cap.vault, cap.target, rb)
            cap.stats.incidents_opened += 1
        raised, no_counter, detail = {}, [], {}
        lost = self.obs
        if lost is not None and raise_now:
            plan, no_counter, detail = detect.counter_plan(lost, obs)
            try:
                if plan:
                    before, raised = cap.tailer.write("counters", lambda c: detect.apply_counters(c, plan))
                    cap._apply_poll_quiet(before)
            except MulliganError as exc:
                if isinstance(exc, OwnWriteFailed):
                    cap._apply_poll_quiet(exc.tail)  # the commits read before it are captured all the same
                inc["timeline"].append({"time": iso(time.time()), "event": "counters not raised", "detail": exc.message})
        if earlier is None or raise_now:  # else seen again with nothing to raise yet: the counters stand
            kept = (earlier["counters"].get("raised") or {}) if earlier else {}
            inc["counters"] = {"raised": {**kept, **raised},
                               "no_counter": no_counter, "no_counter_detail": detail,
                               **({"deferred": "raised when the application reopens the file at the path"}
                                  if not raise_now else {})}
        text = detect.describe(cap.target, rb) + f". Incident {inc['id']}"
        text += f" (opened {earlier['opened_at']}: the same last good commit)." if earlier else "."
        if raised:
            text += " Counters raised: " + ", ".join(f"{t}→{v}" for t, v in raised.items()) + "."
        if no_counter:
            text += " No counter to raise (ids will be reused): " + ", ".join(no_counter) + "."
        if refused:
            text += (f" The vault refuses writes ({refused}): the incident is stored there once it accepts them; "
                     "the commits seen meanwhile wait in the watcher's memory.")
        payload = {"incident": {k: inc.get(k) for k in ("id", "target_name", "kind", "opened_at", "last_good",
                                                         "rolled_back_to", "counters")}}
        inc.setdefault("alerts", []).append(cap.alerter.alert("rollback", text, payload))
        inc["timeline"].append({"time": iso(now), "event": "alert sent", "detail": text})
        if raised:
            inc["timeline"].append({"time": iso(time.time()), "event": "counters raised", "detail": raised})
        # What goes to the vault comes after the alert: a store slow to answer delays none of it.
        # First the commits not stored yet: after a rollback the database no longer holds the
        # last of them (the ones the incident is about), only the watcher's memory does.
        try:
            cap.flush()  # the last good commit, stored before the incident that names it
        except MulliganError as exc:
            refused = exc.message
        detect.record(cap.vault, cap.target, "rollback detected",
                      {"incident": inc["id"], "signals": rb.signals, **({"same_loss": True} if earlier else {})})
        if raised:
            cap._own_write("counters raised")  # the live-use guard's record of our own commit
        if refused:
            inc["timeline"].append({"time": iso(time.time()), "event": "vault refused writes", "detail": refused})
        self._store(inc, refused)
        detect.record(cap.vault, cap.target, "counters raised" if raised else "rollback alert",
                      {"incident": inc["id"], "raised": raised, "no_counter": no_counter})
        return inc
