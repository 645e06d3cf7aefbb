"""Issue 19: published-style trial-level CSVs analysed with the documented commands
(docs/analysis.md, "Worked examples"), numbers checked by hand.

Layouts written here:
- a lab study, within-subject: 10 participants saw every condition (before/after baseline
  blocks ``none_pre``/``none_post``, ``natural``, ``optimized``), text channel ids
  (``channel_0``…), RT in seconds, sides ``a``/``b``, foreign column names;
- a crowd study, between-subject: each participant saw one condition, a sub-condition
  column ``n_refs`` (1 or 9 reference images).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from causalvis.analysis.load import canonicalize
from causalvis.analysis.stats import sign_flip_test
from causalvis.cli import main
from causalvis.errors import CausalvisError

FAST = ["--n-boot", "200", "--n-perm", "500", "--no-mixed-model"]
# Correct answers out of 10 per participant (index) and condition, lab study.
LAB_CORRECT = {
    "none_pre": [5] * 10,
    "natural": [8] * 10,  # every participant +3 over none_pre
    "optimized": [6, 4, 6, 4, 6, 4, 6, 4, 6, 4],  # +1/-1 alternately: mean difference 0
    "none_post": [5] * 10,
}
LAB_MAP = "participant_id=subject,condition=block,correct=hit,rt=RT,side=resp_side"


def lab_csv(path):
    rows = []
    for i in range(10):
        for cond, k in LAB_CORRECT.items():
            for t in range(10):
                rows.append({"subject": f"S{i:02d}", "block": cond, "hit": int(t < k[i]),
                             "RT": 1.5, "resp_side": "ab"[t % 2], "layer": "mixed4a",
                             "channel": f"channel_{t}", "trial": f"{cond}-{t}"})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def crowd_csv(path):
    """12 workers, 6 natural and 6 synthetic; natural workers 9/10 correct with 1
    reference and 7/10 with 9; synthetic workers 6/10 and 8/10."""
    correct = {("natural", 1): 9, ("natural", 9): 7, ("synthetic", 1): 6,
               ("synthetic", 9): 8}
    rows = []
    for w in range(12):
        cond = "natural" if w < 6 else "synthetic"
        for n_refs in (1, 9):
            for t in range(10):
                rows.append({"WorkerId": f"W{w}", "cond": cond, "n_refs": n_refs,
                             "is_correct": t < correct[(cond, n_refs)], "rt_ms": 2400,
                             "pos": ["left", "right"][t % 2]})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def run(args: list[str]) -> int:
    """``causalvis ARGS`` as from the shell; returns the exit status."""
    with pytest.raises(SystemExit) as exit_:
        main(args)
    return exit_.value.code


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def test_sign_flip_exact_minimum_for_ten_participants():
    # 10 participants all favouring one condition: of the 2**10 sign patterns only the
    # observed one and its mirror are as extreme, so p = 2 / 1024 (not the 0.0039,
    # which is 2 / 512, i.e. 9 participants; nor the unpaired test's 0.0004).
    _, p, how = sign_flip_test(np.full(10, 0.3))
    assert how == "exact" and p == 2 / 1024
    # d = (+.1, +.2, -.05): |sum| >= .25 for (+++), (++-) and their mirrors: 4 of 8.
    assert sign_flip_test([0.1, 0.2, -0.05])[1] == 0.5


def test_lab_within_subject_study(tmp_path, capsys):
    src = lab_csv(tmp_path / "lab.csv")
    out = tmp_path / "report"
    code = run(["analyze", "--responses-csv", str(src), "--map", LAB_MAP, "--rt-unit", "s",
                 "--conditions", "none_pre,natural,optimized=synthetic,none_post",
                 "--show-mapping", "--out", str(out), *FAST])
    text = capsys.readouterr().out
    assert code == 0, text
    s = _summary(out)
    # The text channel column was never mapped: auto-detected, kept as a text unit id.
    assert "map: channel" in text and "<- channel (auto)" in text
    assert "map: participant_id" in text and "<- subject (mapped)" in text
    assert s["input"]["mapping"]["unit"] == {"column": "layer:channel", "how": "derived"}
    assert {r["unit"] for r in s["by_unit"]} == {f"mixed4a:channel_{t}" for t in range(10)}
    # Design and test.
    assert s["design"]["design"] == "within"
    assert "design: within-subject; test: paired sign-flip" in text
    assert s["design"]["baselines"] == ["none_pre", "none_post"]
    assert s["design"]["reference"] == "natural"
    # Conditions relabelled and in the order given.
    assert list(s["conditions"]) == ["none_pre", "natural", "synthetic", "none_post"]
    assert s["conditions"]["natural"]["accuracy"] == pytest.approx(0.8)
    assert s["conditions"]["synthetic"]["accuracy"] == pytest.approx(0.5)
    c = {(e["condition"], e["reference"]): e for e in s["contrasts"]}
    nat = c[("natural", "none_pre")]
    assert nat["design"] == "within" and nat["test"].startswith("paired sign-flip over 10")
    assert nat["difference"] == pytest.approx(0.3)
    assert nat["p_permutation"] == 2 / 1024  # exact, hand-derived above
    # Paired bootstrap: every participant's difference is exactly +0.3, so a drawn set of
    # participants always gives +0.3 (an unpaired bootstrap would give a wide interval).
    assert nat["ci_low"] == pytest.approx(0.3) and nat["ci_high"] == pytest.approx(0.3)
    # synthetic vs none_pre: differences +.1/-.1 alternately, mean 0 -> p = 1.
    assert c[("synthetic", "none_pre")]["p_permutation"] == 1.0
    # The two baseline blocks are kept apart, each with its own contrasts.
    assert ("natural", "none_post") in c and ("none_post", "none_pre") in c
    assert ("synthetic", "natural") in c
    # RT in seconds -> ms; sides a/b -> the one-sided rule is available.
    assert s["rt"]["natural"]["mean_participant_median_ms"] == pytest.approx(1500.0)
    assert s["exclusions"]["criteria"]["one_sided"]["available"] is True
    page = (out / "index.html").read_text()
    assert "Design found: <b>within-subject</b>" in page and "paired sign-flip" in page


def test_lab_rt_in_seconds_read_as_ms_warns(tmp_path, capsys):
    src = lab_csv(tmp_path / "lab.csv")
    out = tmp_path / "r"
    assert run(["analyze", "--responses-csv", str(src), "--map", LAB_MAP, "--out", str(out),
                 *FAST]) == 0
    text = capsys.readouterr().out
    assert "warning: rt: median 1.5 read as milliseconds looks like seconds" in text
    assert _summary(out)["rt"]["natural"]["mean_participant_median_ms"] == pytest.approx(1.5)


def test_map_field_empty_drops_it(tmp_path, capsys):
    src = lab_csv(tmp_path / "lab.csv")
    out = tmp_path / "r"
    assert run(["analyze", "--responses-csv", str(src), "--map", LAB_MAP + ",channel=",
                 "--rt-unit", "s", "--show-mapping", "--out", str(out), *FAST]) == 0
    text = capsys.readouterr().out
    assert "map: channel              dropped" in text
    s = _summary(out)
    assert "channel" not in s["input"]["mapping"] and "unit" not in s["input"]["mapping"]
    assert s["by_unit"] == []


def test_no_auto_map_reads_only_mapped_fields(tmp_path, capsys):
    src = lab_csv(tmp_path / "lab.csv")
    out = tmp_path / "r"
    assert run(["analyze", "--responses-csv", str(src), "--map", LAB_MAP, "--no-auto-map",
                 "--rt-unit", "s", "--out", str(out), *FAST]) == 0
    s = _summary(out)
    assert set(s["input"]["mapping"]) == {"participant_id", "condition", "correct", "rt",
                                          "side"}


def test_mapped_text_channel_is_a_text_unit_id(tmp_path):
    src = lab_csv(tmp_path / "lab.csv")
    out = tmp_path / "r"
    assert run(["analyze", "--responses-csv", str(src), "--map",
                 LAB_MAP + ",channel=channel,layer=", "--rt-unit", "s", "--out", str(out),
                 *FAST]) == 0
    units = {r["unit"] for r in _summary(out)["by_unit"]}
    assert units == {f"channel_{t}" for t in range(10)}


def test_baseline_and_reference_options(tmp_path, capsys):
    src = lab_csv(tmp_path / "lab.csv")
    out = tmp_path / "r"
    assert run(["analyze", "--responses-csv", str(src), "--map", LAB_MAP, "--rt-unit", "s",
                 "--baseline", "none_post", "--reference", "optimized", "--out", str(out),
                 *FAST]) == 0
    s = _summary(out)
    assert s["design"]["baselines"] == ["none_post"]
    pairs = {(e["condition"], e["reference"]) for e in s["contrasts"]}
    assert all("none_post" in p or "optimized" in p for p in pairs)
    assert ("none_pre", "none_post") in pairs and ("natural", "optimized") in pairs
    assert run(["analyze", "--responses-csv", str(src), "--map", LAB_MAP, "--baseline",
                 "nothing", "--out", str(out), *FAST]) == 1
    assert "error: --baseline: no condition 'nothing'" in capsys.readouterr().err


def test_crowd_between_subject_with_where_and_by(tmp_path, capsys):
    src = crowd_csv(tmp_path / "crowd.csv")
    cmap = "participant_id=WorkerId,condition=cond,correct=is_correct,rt=rt_ms,side=pos"
    out = tmp_path / "all"
    assert run(["analyze", "--responses-csv", str(src), "--map", cmap, "--by", "n_refs",
                 "--out", str(out), *FAST]) == 0
    text = capsys.readouterr().out
    s = _summary(out)
    assert s["design"]["design"] == "between"
    (e,) = s["contrasts"]
    assert (e["condition"], e["reference"]) == ("synthetic", "natural")
    assert e["test"] == "label permutation between participants"
    # (6*6 + 6*8) / 120 = 0.7 vs (6*9 + 6*7) / 120 = 0.8
    assert s["conditions"]["synthetic"]["accuracy"] == pytest.approx(0.7)
    assert s["conditions"]["natural"]["accuracy"] == pytest.approx(0.8)
    levels = s["by"]["levels"]
    assert set(levels) == {"1", "9"}
    assert levels["1"]["conditions"]["natural"]["accuracy"] == pytest.approx(0.9)
    assert levels["9"]["conditions"]["synthetic"]["accuracy"] == pytest.approx(0.8)
    assert levels["1"]["contrasts"][0]["difference"] == pytest.approx(-0.3)
    assert "n_refs = 1 (between-subject):" in text
    # --where: the paper's sub-result "1 reference" alone.
    out1 = tmp_path / "one"
    assert run(["analyze", "--responses-csv", str(src), "--map", cmap, "--where",
                 "n_refs == 1", "--out", str(out1), *FAST]) == 0
    s1 = _summary(out1)
    assert s1["conditions"]["natural"]["accuracy"] == pytest.approx(0.9)
    assert s1["conditions"]["synthetic"]["accuracy"] == pytest.approx(0.6)
    assert s1["data"]["n_rows"] == 120
    capsys.readouterr()
    assert run(["analyze", "--responses-csv", str(src), "--map", cmap, "--where",
                 "n_refs ==", "--out", str(out1), *FAST]) == 1
    assert capsys.readouterr().err.startswith("error: --where 'n_refs =='")


def _frame(**extra):
    return pd.DataFrame({"participant_id": ["a"] * 4, "condition": ["x"] * 4,
                         "correct": [1, 0, 1, 0], **extra})


@pytest.mark.parametrize(("values", "expected"), [
    (["a", "b", "A", "b"], ["left", "right", "left", "right"]),
    ([0, 1, 1, 0], ["left", "right", "right", "left"]),
    (["left", "right", "L", "R"], ["left", "right", "left", "right"]),
    (["upper", "lower", "top", "bottom"], ["upper", "lower", "upper", "lower"]),
])
def test_side_spellings(values, expected):
    assert canonicalize(_frame(side=values), {})["side"].tolist() == expected


def test_unknown_side_values():
    frame = _frame(side=["a", "b", "c", "a"])
    with pytest.raises(CausalvisError, match="'c'"):
        canonicalize(frame, {"side": "side"})
    df = canonicalize(frame, {})
    assert "side" not in df.columns and "side" in df.attrs["load"]["warnings"][0]


def test_rt_unit_and_plausibility():
    df = canonicalize(_frame(rt=[1.0, 2.0, 3.0, 4.0]), {}, rt_unit="s")
    assert df["rt"].tolist() == [1000.0, 2000.0, 3000.0, 4000.0]
    assert df.attrs["load"]["warnings"] == []
    df = canonicalize(_frame(rt=[900, 1000, 1200, 800]), {}, rt_unit="s")
    assert "looks like milliseconds" in df.attrs["load"]["warnings"][0]
    df = canonicalize(_frame(rt=[900, 1000, 1200, 800]), {})
    assert df.attrs["load"]["warnings"] == []


def test_mixed_design_pairs_those_who_saw_both(tmp_path):
    """10 participants saw both conditions (each +0.3 with natural), 2 saw only natural:
    the paired test uses the 10, and says that the 2 are not in it."""
    src = lab_csv(tmp_path / "lab.csv")
    raw = pd.read_csv(src)
    raw = raw[raw["block"].isin(["none_pre", "natural"])]
    extra = raw[(raw["subject"] == "S00") & (raw["block"] == "natural")]
    raw = pd.concat([raw, extra.assign(subject="X1"), extra.assign(subject="X2")])
    raw.to_csv(src, index=False)
    out = tmp_path / "r"
    assert run(["analyze", "--responses-csv", str(src), "--map", LAB_MAP, "--rt-unit", "s",
                "--out", str(out), *FAST]) == 0
    s = _summary(out)
    assert s["design"]["design"] == "mixed"
    (e,) = s["contrasts"]
    assert e["design"] == "mixed" and e["p_permutation"] == 2 / 1024
    assert e["test"] == ("paired sign-flip over 10 participants (exact); 2 participants who "
                         "saw only one of the two conditions are not in the test")


def test_conditions_merge_and_unknown_names(tmp_path, capsys):
    """Several old names may share a new one (a combined condition); a name not in the
    data is an error, not a silently missing contrast."""
    src = lab_csv(tmp_path / "lab.csv")
    out = tmp_path / "r"
    assert run(["analyze", "--responses-csv", str(src), "--map", LAB_MAP, "--rt-unit", "s",
                "--conditions", "none_pre=none,none_post=none,natural,optimized=synthetic",
                "--out", str(out), *FAST]) == 0
    s = _summary(out)
    assert list(s["conditions"]) == ["none", "natural", "synthetic"]
    assert s["conditions"]["none"]["n_trials"] == 200
    assert s["design"]["baselines"] == ["none"]
    capsys.readouterr()
    assert run(["analyze", "--responses-csv", str(src), "--map", LAB_MAP, "--conditions",
                "optimised=synthetic", "--out", str(out), *FAST]) == 1
    assert "error: --conditions: no condition 'optimised'" in capsys.readouterr().err


LAB_PROFILE = '''
description = "Lab study, within-subject, RT in seconds"
format = "csv"
auto_map = false
rt_unit = "s"
baseline = ["none_pre", "none_post"]

[map]
participant_id = "subject"
condition = "block"
correct = "hit"
rt = "RT"
side = "resp_side"
channel = "channel"

[conditions]
none_pre = "none_pre"
natural = "natural"
optimized = "synthetic"
none_post = "none_post"
'''


def test_profile_file_describes_the_layout_once(tmp_path, capsys):
    src = lab_csv(tmp_path / "lab.csv")
    prof = tmp_path / "lab.toml"
    prof.write_text(LAB_PROFILE)
    out = tmp_path / "r"
    assert run(["analyze", "--responses-csv", str(src), "--profile", str(prof),
                "--show-mapping", "--out", str(out), *FAST]) == 0
    text = capsys.readouterr().out
    assert f"profile: {prof} (Lab study, within-subject, RT in seconds)" in text
    s = _summary(out)
    assert s["input"]["auto"] is False and "layer" not in s["input"]["mapping"]
    assert list(s["conditions"]) == ["none_pre", "natural", "synthetic", "none_post"]
    assert s["rt"]["natural"]["mean_participant_median_ms"] == pytest.approx(1500.0)
    c = {(e["condition"], e["reference"]): e for e in s["contrasts"]}
    assert c[("natural", "none_pre")]["p_permutation"] == 2 / 1024
    # The command line wins over the profile.
    assert run(["analyze", "--responses-csv", str(src), "--profile", str(prof), "--rt-unit",
                "ms", "--map", "channel=", "--out", str(out), *FAST]) == 0
    s = _summary(out)
    assert s["rt"]["natural"]["mean_participant_median_ms"] == pytest.approx(1.5)
    assert "channel" in s["input"]["dropped"]


@pytest.mark.parametrize(("body", "message"), [
    ("colour = 1", "unknown key"),
    ("rt_unit = 'min'", "rt_unit must be ms or s"),
    ("format = 'imi'\nwhere = 'x == 1'", "where apply to format csv only"),
    ("[map]\nsubject = 'participant_id'", "unknown field(s) subject"),
    ("[map\n", "not valid TOML"),
])
def test_bad_profiles_are_one_error(tmp_path, capsys, body, message):
    src = lab_csv(tmp_path / "lab.csv")
    prof = tmp_path / "bad.toml"
    prof.write_text(body)
    assert run(["analyze", "--responses-csv", str(src), "--profile", str(prof), "--out",
                str(tmp_path / "r"), *FAST]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_shipped_profiles(tmp_path, capsys):
    from test_analysis_imi import imi_csv

    from causalvis.analysis.profile import load_profile, shipped

    assert shipped() == ["causalvis", "imi"]
    assert load_profile("imi").format == "imi"
    path = imi_csv(tmp_path / "responses_main.csv")
    out = tmp_path / "report"
    assert run(["analyze", "--responses-csv", str(path), "--profile", "imi", "--out",
                str(out), *FAST]) == 0
    assert _summary(out)["models"]["available"]
    assert run(["analyze", "--responses-csv", str(path), "--profile", "nosuch", "--out",
                str(out), *FAST]) == 1
    assert "no profile 'nosuch' (shipped: causalvis, imi" in capsys.readouterr().err
