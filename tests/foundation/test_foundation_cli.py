"""The CLI: real commands, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "causalvis", *args], capture_output=True, text=True, timeout=300
    )


def test_help_on_every_command():
    import typer

    from causalvis.cli import _register_commands, app

    out = run_cli("--help")
    assert out.returncode == 0
    _register_commands()
    commands = sorted(typer.main.get_command(app).commands)
    assert {"models", "layers", "probe", "init", "build"} <= set(commands)
    for command in commands:
        sub = run_cli(command, "--help")
        assert sub.returncode == 0, (command, sub.stderr)
        assert "Usage" in sub.stdout


def test_models_and_layers():
    out = run_cli("models", "--json")
    rows = json.loads(out.stdout)
    assert any(r["name"] == "lite0" and r["embedded"] for r in rows)
    layers = run_cli("layers", "lite0", "--json")
    names = [row["name"] for row in json.loads(layers.stdout)]
    assert "blocks.3.2" in names


def test_probe_json(tmp_path, samples):
    paths = []
    for i in range(2):
        p = tmp_path / f"img{i}.png"
        samples.load(samples.ids[i * 10]).save(p)
        paths.append(str(p))
    out = run_cli(
        "probe", "lite0", *paths, "--unit", "blocks.3.2:5", "--unit", "blocks.1.1:0", "--json"
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 4 and {r["unit"] for r in rows} == {"blocks.3.2:5", "blocks.1.1:0"}
    assert all(isinstance(r["activation"], float) for r in rows)


@pytest.mark.parametrize(
    "args, message",
    [
        (["probe", "lite0", "/no/such.png", "--unit", "blocks.3.2:1"], "image not found"),
        (["probe", "nomodel", "X", "--unit", "blocks.3.2:1"], "unknown model"),
        (["layers", "nomodel"], "unknown model"),
    ],
)
def test_user_errors_are_one_line(args, message, tmp_path):
    out = run_cli(*args)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_unknown_layer_and_channel_are_one_line(tmp_path, samples):
    p = tmp_path / "x.png"
    samples.load(samples.ids[0]).save(p)
    for unit, message in [("blocks.77:1", "unknown layer"), ("blocks.3.2:999", "channels 0..79")]:
        out = run_cli("probe", "lite0", str(p), "--unit", unit)
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1
