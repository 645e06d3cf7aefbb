"""docs/protocol.md's preset columns are what the presets give (the table cannot drift)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from causalvis.config import preset

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
ROW = re.compile(r"^\| (?P<name>[^|]+) \|[^|]*\|[^|]*\| `(?P<paper>[^`]*)` \| `(?P<imi>[^`]*)` "
                 r"\| `(?P<field>[a-z_.]+)` \|")


def _fmt(value: object) -> str:
    """The one way the table writes a config value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _value(cfg, field: str) -> object:
    value = cfg.model_dump()
    for key in field.split("."):
        value = value[key]
    return value


def _rows() -> list[re.Match]:
    return [m for line in DOC.read_text().splitlines() if (m := ROW.match(line))]


def test_the_table_has_the_protocol_rows():
    fields = {m["field"] for m in _rows()}
    assert len(fields) >= 40
    for must in ("occlusion.patch_fraction", "exemplars.difficulty", "sessions.n_catch",
                 "exclusion.min_catch_accuracy", "experiment.min_view_ms", "featurevis.steps"):
        assert must in fields


@pytest.mark.parametrize("row", _rows(), ids=lambda m: m["field"])
def test_preset_columns_match_the_presets(row):
    assert _fmt(_value(preset("paper2021"), row["field"])) == row["paper"], row["name"]
    assert _fmt(_value(preset("imi2023"), row["field"])) == row["imi"], row["name"]
