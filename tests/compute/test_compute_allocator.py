"""glibc malloc tuning: applied once per process, switchable off, and it changes no number."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CHILD = """
import json, torch
from causalvis.malloc import tune_malloc
first, again = tune_malloc(), tune_malloc()
torch.manual_seed(0)
x = torch.randn(256, 1024)
for _ in range(3):  # allocations of several MiB, freed every round
    x = torch.tanh(x @ torch.randn(1024, 1024) / 32)
print(json.dumps({"first": first, "again": again, "sum": float(x.double().sum())}))
"""


def _child(setting: str) -> dict:
    env = dict(os.environ, CAUSALVIS_MALLOC_TUNING=setting, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tuning_applies_once_can_be_switched_off_and_changes_no_number():
    on, off = _child("1"), _child("0")
    assert on["first"] is True and on["again"] is True
    assert off["first"] is False and off["again"] is False
    assert on["sum"] == off["sum"]
