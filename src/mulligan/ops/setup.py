"""init and protect: create the configuration and vault; register and stamp a target."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .. import config as cfg
from ..engines.base import engine_for
from ..errors import GuardRefused, MulliganError, NotFound, StorageError, UsageError
from ..model import ENVIRONMENTS, Identity, Target
from ..timeparse import iso, utc_now
from ..vault import Vault
from .workspace import Workspace


@dataclass
class InitResult:
    config_path: str
    vault_url: str
    created_config: bool
    created_vault: bool

    def to_json(self) -> dict:
        return dict(self.__dict__)


def init(config_path: Path, vault_url: str | None = None) -> InitResult:
    created_config = False
    if config_path.exists():
        conf = cfg.load(config_path)
        if vault_url and vault_url != conf.data.get("vault", {}).get("url"):
            raise GuardRefused(
                f"{config_path} already exists with another vault",
                unchanged="the configuration and both vaults were left as they were",
                hint="edit [vault] url by hand, or run init in another folder",
            )
    else:
        config_path.parent.mkdir(parents=True, exist_ok=True)
        conf = cfg.write_new(config_path, vault_url or cfg.DEFAULT_VAULT)
        created_config = True
    url = conf.vault_url
    created_vault = False
    try:
        try:
            Vault.open(url)
        except NotFound:
            try:
                if "://" not in url:
                    Path(url).mkdir(parents=True, exist_ok=True)
                Vault.create(url)
            except OSError as exc:
                raise StorageError(f"cannot create the vault at {url}: {exc.strerror or exc}",
                                   hint="choose a folder you can write with --vault") from None
            created_vault = True
        except OSError as exc:  # say, a file where the vault folder should be
            raise StorageError(f"cannot open the vault at {url}: {exc.strerror or exc}",
                               hint="choose a folder you can write with --vault") from None
    except MulliganError as exc:
        if created_config:  # no configuration naming a vault that is not there
            config_path.unlink(missing_ok=True)
            exc.unchanged = exc.unchanged or f"no configuration was written at {config_path}"
        raise
    return InitResult(str(config_path), url, created_config, created_vault)


@dataclass
class ProtectResult:
    target: Target
    identity: Identity
    restamped_copy: bool

    def to_json(self) -> dict:
        t = self.target
        return {
            "name": t.name,
            "id": t.id,
            "env": t.env,
            "path": t.path,
            "engine": t.engine,
            "identity": self.identity.to_json(),
            "restamped_copy": self.restamped_copy,
        }


def protect(ws: Workspace, path: str, name: str, env: str, engine: str = "sqlite") -> ProtectResult:
    cfg.validate_name(name)
    if env not in ENVIRONMENTS:
        raise UsageError(f"unknown environment {env!r}", hint=f"choose one of: {', '.join(ENVIRONMENTS)}")
    path = os.path.abspath(path)
    eng = engine_for(engine)
    eng.check(path)
    if name in ws.config.targets:  # before the stamp is written, not after (add_target checks too late)
        raise GuardRefused(f"a target named {name!r} is already registered",
                           unchanged="the configuration and the database were left as they were",
                           hint="choose another --name, or remove the old section from mulligan.toml first")
    for other in ws.config.targets.values():
        if os.path.abspath(other.path) == path:
            raise GuardRefused(
                f"{path} is already protected as target {other.name!r}",
                unchanged="the configuration and the database were left as they were",
            )
    existing = eng.read_identity(path)
    restamped = False
    if existing is not None and existing.kind == "original":
        raise GuardRefused(
            f"{path} already carries the identity of target {existing.name!r} ({existing.env}, id {existing.target_id})",
            unchanged="the configuration and the database were left as they were",
            hint="a database is one target; if this file is a copy, restore it with 'mulligan restore --to' so it is stamped as a copy",
        )
    restamped = existing is not None
    target = Target(name=name, path=path, env=env, id="t-" + os.urandom(6).hex(), engine=engine)
    identity = Identity(target_id=target.id, name=name, env=env, stamped_at=iso(utc_now()), generation=1)
    eng.write_identity(path, identity)
    from .liveuse import record_own_write  # the stamp is Mulligan's own write, never "live use"

    record_own_write(ws.vault, target, by="protect")
    ws.config.add_target(target)
    ws.vault.put_json(f"targets/{target.id}.json", {"name": name, "id": target.id, "env": env, "engine": engine, "path": path})
    return ProtectResult(target, identity, restamped)
