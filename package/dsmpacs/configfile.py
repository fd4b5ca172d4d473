"""Changing values in ``config.toml`` from the program (the administration pages).

Only top-level scalar settings are written. The file is edited line by line,
so the administrator's comments and other settings stay as they were: a
``name = ...`` line is replaced, or a new one appended. The result is parsed
and validated as Settings before it replaces the file (atomically, under a
lock), so a bad value never reaches the disk. Running processes keep the
settings they started with; a change takes effect at the next start.
"""
from __future__ import annotations

import fcntl
import os
import re
import tomllib
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterator, Mapping

from dsmpacs.settings import CONFIG_FILE, ENV_PREFIX, Settings, SettingsError


def config_path(settings: Settings) -> Path:
    return settings.data_dir / CONFIG_FILE


def read_values(settings: Settings) -> dict[str, Any]:
    path = config_path(settings)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    if any(ord(c) < 0x20 for c in text):
        raise SettingsError("control characters are not allowed in a setting")
    return f'"{text}"'


def source_of(settings: Settings, name: str, file_at_start: Mapping[str, Any],
              env: Mapping[str, str] | None = None) -> str:
    """Where a running value came from: default, config.toml, environment or
    command line. ``file_at_start`` is config.toml as the process read it. Only
    a value from the default or the file can be changed by editing the file."""
    env = os.environ if env is None else env
    if ENV_PREFIX + name.upper() in env:
        return "environment"
    default = {f.name: f.default for f in fields(Settings)}[name]
    if getattr(settings, name) != file_at_start.get(name, default):
        return "command line"
    return "config.toml" if name in file_at_start else "default"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def update(settings: Settings, changes: Mapping[str, Any]) -> Path:
    """Write ``changes`` (setting name -> value) into config.toml."""
    known = {f.name for f in fields(Settings)}
    for name in changes:
        if name not in known or name == "data_dir":
            raise SettingsError(f"{name!r} cannot be set in config.toml")
    path = config_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        lines = text.splitlines()
        for name, value in changes.items():
            line = f"{name} = {_literal(value)}"
            pattern = re.compile(rf"^\s*{re.escape(name)}\s*=")
            hits = [i for i, existing in enumerate(lines) if pattern.match(existing)]
            if hits:
                lines[hits[0]] = line
                for i in reversed(hits[1:]):
                    del lines[i]
            else:
                lines.append(line)
        new_text = "\n".join(lines) + "\n"
        try:
            parsed = tomllib.loads(new_text)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config.toml would not parse: {exc}") from exc
        for name, value in changes.items():
            if parsed.get(name) != value:
                raise SettingsError(f"config.toml would not hold {name} = {value!r}")
        # Validate as the next start will read it (file layer only).
        _validate(settings.data_dir, parsed)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(fd, new_text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def _validate(data_dir: Path, values: Mapping[str, Any]) -> None:
    from dsmpacs.settings import _coerce

    known = {f.name: f for f in fields(Settings)}
    coerced = {}
    for name, raw in values.items():
        if name not in known:
            raise SettingsError(f"config.toml: unknown setting {name!r}")
        coerced[name] = _coerce(known[name], raw, "config.toml")
    Settings(**{**coerced, "data_dir": Path(data_dir)})
