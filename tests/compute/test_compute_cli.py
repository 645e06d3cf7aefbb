"""``causalvis build`` executor flags: validated before any stage runs."""

from __future__ import annotations

import pytest

from causalvis.cli import main
from causalvis.compute import build_options


def test_flags_of_another_executor_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["build", str(tmp_path), "--executor", "ray", "--slurm-partition", "gpu"])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: option(s) --slurm-partition do not apply to the ray executor "
        "(it takes: --ray-address, --ray-cpus)"
    )


def test_build_options_keep_only_what_was_given():
    assert build_options("ray", retries=1, threads=2, ray_address="auto", num_cpus=None) == {
        "retries": 1,
        "threads": 2,
        "ray_address": "auto",
    }
    with pytest.raises(Exception, match="--retries must be >= 0"):
        build_options("local", retries=-1)
