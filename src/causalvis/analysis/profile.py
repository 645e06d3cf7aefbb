"""Dataset profiles: a published data set's layout described once, in a small TOML file.

A profile holds what would otherwise be typed as ``causalvis analyze`` options every time
(docs/analysis.md, "Dataset profiles")::

    description = "Lab study, within-subject"
    format = "csv"            # csv | imi
    auto_map = false          # read only the fields in [map]
    rt_unit = "s"             # ms | s
    where = "practice == 0"   # optional row filter (pandas query)
    by = "n_refs"             # optional: also analyse per level of this column
    baseline = ["none_pre", "none_post"]
    reference = "natural"

    [map]                     # field = column; field = "" drops the field
    participant_id = "subject"
    channel = ""

    [conditions]              # old = new, in display order
    none_pre = "none_pre"
    optimized = "synthetic"

``--profile NAME`` reads a shipped profile (``causalvis``, ``imi``: the layouts the tool
knows), ``--profile FILE.toml`` any file; options given on the command line win.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from causalvis.errors import CausalvisError

KEYS = {"description", "format", "auto_map", "rt_unit", "where", "by", "baseline",
        "reference", "map", "conditions"}


@dataclass(frozen=True)
class Profile:
    """A parsed profile; ``None`` / empty = not set (the command's default applies)."""

    name: str
    description: str = ""
    format: str | None = None
    auto_map: bool | None = None
    rt_unit: str | None = None
    where: str | None = None
    by: str | None = None
    baselines: tuple[str, ...] = ()
    reference: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    conditions: tuple[tuple[str, str], ...] = ()


def shipped() -> list[str]:
    """Names of the profiles shipped with causalvis."""
    folder = resources.files("causalvis.analysis.profiles")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir()
                  if p.name.endswith(".toml"))


def load_profile(spec: str) -> Profile:
    """A shipped profile by name, or a TOML file by path."""
    path = Path(spec)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise CausalvisError(f"--profile: no such file {path}")
        text, name = path.read_text(encoding="utf-8"), str(path)
    else:
        res = resources.files("causalvis.analysis.profiles") / f"{spec}.toml"
        if not res.is_file():
            raise CausalvisError(f"--profile: no profile {spec!r} (shipped: "
                                 f"{', '.join(shipped())}; or give a FILE.toml)")
        text, name = res.read_text(encoding="utf-8"), spec
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CausalvisError(f"profile {name}: not valid TOML: {exc}") from None
    return parse_profile(data, name)


def parse_profile(data: dict[str, Any], name: str = "profile") -> Profile:
    """Check a profile's keys and types; one clear error for the first problem."""
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise CausalvisError(f"profile {name}: unknown key(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(KEYS))})")

    def text(key: str) -> str | None:
        v = data.get(key)
        if v is not None and not isinstance(v, str):
            raise CausalvisError(f"profile {name}: {key} must be a string")
        return v

    def table(key: str) -> dict[str, str]:
        v = data.get(key, {})
        if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
            raise CausalvisError(f"profile {name}: [{key}] must map names to strings")
        return dict(v)

    auto = data.get("auto_map")
    if auto is not None and not isinstance(auto, bool):
        raise CausalvisError(f"profile {name}: auto_map must be true or false")
    base = data.get("baseline", [])
    base = [base] if isinstance(base, str) else base
    if not isinstance(base, list) or not all(isinstance(b, str) for b in base):
        raise CausalvisError(f"profile {name}: baseline must be a name or a list of names")
    fmt, rt_unit = text("format"), text("rt_unit")
    if fmt not in (None, "csv", "imi"):
        raise CausalvisError(f"profile {name}: format must be csv or imi, not {fmt!r}")
    if rt_unit not in (None, "ms", "s"):
        raise CausalvisError(f"profile {name}: rt_unit must be ms or s, not {rt_unit!r}")
    csv_only = sorted(k for k in ("auto_map", "rt_unit", "where", "by") if k in data)
    if fmt == "imi" and csv_only:
        raise CausalvisError(f"profile {name}: {', '.join(csv_only)} apply to format csv only")
    return Profile(name=name, description=text("description") or "", format=fmt,
                   auto_map=auto, rt_unit=rt_unit, where=text("where"), by=text("by"),
                   baselines=tuple(base), reference=text("reference"),
                   mapping=table("map"), conditions=tuple(table("conditions").items()))
