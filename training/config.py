"""Config machinery: dotted overrides, `--help` text, flattening and diffs of nested config dataclasses.

Every component owns one dataclass (ModelConfig in models/__init__.py, SampleConfig in models/sampling.py, ...) whose
fields carry `metadata={"help": ...}` and whose `__post_init__` validates and names the option at fault.
This module knows nothing of those classes: it walks any nested dataclass. Tested in tests/test_config.py.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _field_types(cls) -> dict[str, Any]:
    # `from __future__ import annotations` makes annotations strings; resolve them once per class.
    return typing.get_type_hints(cls)


def flatten(cfg, prefix: str = "") -> dict[str, Any]:
    """Nested dataclass -> {"section.field": value} in declaration order."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls, d: dict[str, Any]):
    """Rebuild a nested dataclass from `to_dict` output (config.json). Unknown keys are errors."""
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        t = hints[f.name]
        kwargs[f.name] = from_dict(t, d[f.name]) if dataclasses.is_dataclass(t) else d[f.name]
    return cls(**kwargs)


def parse_value(text: str, typ, key: str):
    """Parse one command-line string into the field's type; the error names the option."""
    if typ is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"--{key} expects true or false, got {text!r}")
    if typ is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            pass
        try:  # accept 2e5 and 1.0 when they are whole numbers
            f = float(text)
        except ValueError:
            raise ValueError(f"--{key} expects an integer, got {text!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise ValueError(f"--{key} expects an integer, got {text!r}")
        return int(f)
    if typ is float:
        try:
            v = float(text)
        except ValueError:
            raise ValueError(f"--{key} expects a number, got {text!r}") from None
        if math.isnan(v):
            raise ValueError(f"--{key} expects a number, got {text!r}")
        return v
    if typ is str:
        return text
    raise TypeError(f"unsupported config type {typ!r} for {key}")


def apply_overrides(cfg, overrides: dict[str, str]):
    """Return a copy of `cfg` with dotted string overrides applied; each level re-runs its validation."""
    known = flatten(cfg)
    for key in overrides:
        if key not in known:
            close = [k for k in known if k.split(".")[-1] == key.split(".")[-1]]
            hint = f" (did you mean --{close[0]}?)" if close else " (see --help)"
            raise ValueError(f"unknown option --{key}{hint}")
    return _apply(cfg, overrides, "")


def _apply(cfg, overrides: dict[str, str], prefix: str):
    hints = _field_types(type(cfg))
    changes = {}
    for f in dataclasses.fields(cfg):
        key = prefix + f.name
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            if any(k.startswith(key + ".") for k in overrides):
                changes[f.name] = _apply(v, overrides, key + ".")
        elif key in overrides:
            changes[f.name] = parse_value(overrides[key], hints[f.name], key)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def help_lines(cfg, prefix: str = "") -> list[str]:
    """One line per option: `--key=default  help` (help text carries the unit)."""
    lines = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(v):
            lines.extend(help_lines(v, key + "."))
            continue
        shown = json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
        lines.append(f"  --{key}={shown}".ljust(44) + "  " + f.metadata.get("help", ""))
    return lines


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Flattened keys whose values differ between two flattened configs (missing keys count as different)."""
    return sorted(k for k in set(old) | set(new) if old.get(k, _MISSING) != new.get(k, _MISSING))


_MISSING = types.SimpleNamespace()
