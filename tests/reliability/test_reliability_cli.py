"""The CLI on bad input: one ``error:`` line naming the field or file, exit 1, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


def causalvis(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "causalvis", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def assert_one_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    # progress lines ("stage scan") may come first; the error is one line, the last one
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def initialised(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    proc = causalvis("init", "X", "--preset", "quick", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root


CORRUPTIONS = [
    ("per_layer = 1", "per_layer = -3", "units.per_layer"),
    ("n_units = 18", 'n_units = "many"', "units.n_units"),
    ("patch_fraction = 0.4", "patch_fraction = 7", "occlusion.patch_fraction"),
    ('mode = "per_layer"', 'mode = "everything"', "units.mode"),
    ("[units]", "[units", "invalid TOML"),
    ("n_bins = 10", "n_bins = 10\nn_bins = 11", "invalid TOML"),
]


@pytest.mark.parametrize(
    ("old", "new", "field"), CORRUPTIONS, ids=[c[2] + ":" + c[1][:12] for c in CORRUPTIONS]
)
def test_invalid_toml_values_name_the_field(initialised, tmp_path, old, new, field):
    study = tmp_path / "X"
    study.mkdir()
    text = (initialised / "X" / "study.toml").read_text()
    assert old in text
    (study / "study.toml").write_text(text.replace(old, new, 1))
    proc = causalvis("build", str(study), "--stage", "units", cwd=tmp_path)
    assert_one_error(proc, field, "study.toml")


def test_unknown_layer_names_it(initialised, tmp_path):
    study = tmp_path / "X"
    study.mkdir()
    text = (initialised / "X" / "study.toml").read_text()
    (study / "study.toml").write_text(text.replace('"blocks.3.2"', '"blocks.99.9"', 1))
    proc = causalvis("build", str(study), "--stage", "scan", cwd=tmp_path)
    assert_one_error(proc, "unknown layer", "blocks.99.9")


def test_missing_study_and_config(tmp_path):
    assert_one_error(causalvis("build", "nope", "--stage", "units", cwd=tmp_path), "nope")
    (tmp_path / "empty").mkdir()
    assert_one_error(causalvis("serve", "empty", "--port", "8765", cwd=tmp_path), "empty")


def test_probe_bad_inputs(tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3)
    Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    proc = causalvis("probe", "lite0", "corrupt.png", "--unit", "blocks.3.2:1", cwd=tmp_path)
    assert_one_error(proc, "corrupt.png")
    proc = causalvis("probe", "nosuchmodel", "ok.png", "--unit", "blocks.3.2:1", cwd=tmp_path)
    assert_one_error(proc, "nosuchmodel")
