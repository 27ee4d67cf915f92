"""mulligan.toml: where the vault is and which databases are protected.

Only the CLI (and the web app) locate configuration files; the library takes a
:class:`Config` object.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, GuardRefused, UsageError
from .model import Target

CONFIG_NAME = "mulligan.toml"
DEFAULT_VAULT = ".mulligan/vault"


@dataclass
class Config:
    path: Path
    data: dict = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def vault_url(self) -> str:
        url = self.data.get("vault", {}).get("url", DEFAULT_VAULT)
        if "://" in url:
            if url.startswith("file://"):
                return str(self._resolve(url[len("file://"):]))
            return url
        return str(self._resolve(url))

    @property
    def vault_min_free(self) -> int | None:
        """``[vault] min_free``: bytes a local vault leaves free on its disk (None: the default)."""
        raw = self.data.get("vault", {}).get("min_free")
        return None if raw is None else parse_size(raw, "[vault] min_free")

    def _resolve(self, p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else (self.dir / q)

    @property
    def targets(self) -> dict[str, Target]:
        out = {}
        for name, t in self.data.get("targets", {}).items():
            options = {k: v for k, v in t.items() if k not in ("path", "env", "id", "engine")}
            out[name] = Target(
                name=name,
                path=str(self._resolve(t["path"])),
                env=t.get("env", "development"),
                id=t.get("id", ""),
                engine=t.get("engine", "sqlite"),
                options=options,
            )
        return out

    def target(self, name: str) -> Target:
        targets = self.targets
        if name not in targets:
            known = ", ".join(sorted(targets)) or "none yet"
            raise ConfigError(
                f"no target named {name!r} in {self.path}",
                hint=f"known targets: {known}; register one with 'mulligan protect PATH --name {name} --env ENV'",
            )
        return targets[name]

    def section(self, name: str) -> dict:
        return self.data.get(name, {})

    def add_target(self, target: Target) -> None:
        """Append a [targets.NAME] section, leaving the rest of the file as the user wrote it."""
        if target.name in self.targets:
            raise GuardRefused(
                f"a target named {target.name!r} is already registered",
                unchanged="the configuration and the database were left as they were",
                hint="choose another --name, or remove the old section from mulligan.toml first",
            )
        block = (
            f"\n[targets.{_key(target.name)}]\n"
            f"engine = {_str(target.engine)}\n"
            f"path = {_str(target.path)}\n"
            f"env = {_str(target.env)}\n"
            f"id = {_str(target.id)}\n"
        )
        text = self.path.read_text() if self.path.exists() else ""
        if text and not text.endswith("\n"):
            text += "\n"
        _atomic_write(self.path, text + block)
        self.data = load_toml(self.path)


def _key(name: str) -> str:
    return name if name.replace("_", "").replace("-", "").isalnum() else _str(name)


def _str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="fix the file, then run the command again") from None


def validate_name(name: str) -> str:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or len(name) > 64:
        raise UsageError(
            f"{name!r} is not a usable target name",
            hint="use letters, digits, '-', '_' or '.', at most 64 characters",
        )
    return name


def locate(explicit: str | None, environ: dict | None = None, cwd: Path | None = None) -> Path:
    """--config, else MULLIGAN_CONFIG, else ./mulligan.toml (never a parent folder)."""
    environ = os.environ if environ is None else environ
    if explicit:
        return Path(explicit).expanduser().absolute()
    if environ.get("MULLIGAN_CONFIG"):
        return Path(environ["MULLIGAN_CONFIG"]).expanduser().absolute()
    return (cwd or Path.cwd()) / CONFIG_NAME


def load(path: Path) -> Config:
    if not path.exists():
        raise ConfigError(
            f"no configuration at {path}",
            hint="run 'mulligan init' in the project folder, or point --config / MULLIGAN_CONFIG at the file",
        )
    return Config(path=path, data=load_toml(path))


def write_new(path: Path, vault_url: str) -> Config:
    text = (
        "# Mulligan configuration. Targets are appended by 'mulligan protect'.\n"
        "[vault]\n"
        f"url = {_str(vault_url)}\n"
    )
    _atomic_write(path, text)
    return load(path)


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
               "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}


def parse_size(value, what: str) -> int:
    """A size in bytes from 123, "512MiB", "2GB", "1.5 GiB"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value).strip().lower().replace(" ", "")
    num = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(num):]
    try:
        n = float(num)
    except ValueError:
        n = -1.0
    if unit not in _SIZE_UNITS or n < 0:
        raise ConfigError(f"cannot read {what} = {value!r} as a size",
                          hint="use a number of bytes or forms such as 512MiB, 2GiB or 0 (none)")
    return int(n * _SIZE_UNITS[unit])
