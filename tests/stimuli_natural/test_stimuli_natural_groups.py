"""Source groups (issue 18, item 8): no reference from its query's group, in both schemes.

Pure tests on synthetic rankings with synthetic groups, the groups of the image sources,
and the record of the rule; the stage check reuses the small natural study.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from causalvis.config import ExemplarsConfig, ImagesConfig
from causalvis.errors import CausalvisError, ConfigError
from causalvis.images import FolderSource, source_groups
from causalvis.stimuli.exemplars import assign_bin, exemplar_record, plan_for_unit
from causalvis.store.exemplars import ExemplarRecord, read_exemplars, write_exemplars
from causalvis.store.layout import StudyPaths
from causalvis.store.units import Unit, UnitEntry, read_units

N = 600
UNIT = UnitEntry(Unit("l", 0))


def _ranking(n: int = N, seed: int = 3) -> tuple[np.ndarray, list[str], list[str]]:
    """Activations = -rank in a shuffled scan order; ids ``g<k>/img<i>.png`` in 7 groups."""
    rank = np.random.default_rng(seed).permutation(n) + 1
    ids = [f"g{i % 7}/img{i}.png" for i in range(n)]
    return -rank.astype(np.float64), ids, [i.split("/")[0] for i in ids]


def _cfg(scheme: str, **kw) -> ExemplarsConfig:
    return ExemplarsConfig(scheme=scheme, n_image_sets=10 if scheme == "rank_bins" else 20, **kw)


def _record(scheme: str, groups, seed=(0, 1), **kw) -> ExemplarRecord:
    acts, ids, _ = _ranking()
    cfg = _cfg(scheme, **kw)
    plan = plan_for_unit(acts, cfg, list(seed), "l:0", groups)
    return exemplar_record(UNIT, acts, ids, plan, cfg, groups, "subfolder")


def _group(image) -> str:
    return image.image_id.split("/")[0]


def test_rank_bins_no_reference_shares_its_query_group():
    _, _, groups = _ranking()
    rec = _record("rank_bins", groups)
    without = _record("rank_bins", None)
    assert rec.exclude_query_group is not None
    assert (rec.exclude_query_group.reused, rec.exclude_query_group.same_group) == (0, 0)
    conflicts = 0
    for s, old in zip(rec.image_sets, without.image_sets, strict=True):
        assert s.query == old.query  # queries never move
        conflicts += sum(_group(r) == _group(s.query) for r in old.references)
        for j, ref in enumerate(s.references, start=1):
            assert _group(ref) != _group(s.query)
            assert 20 * j < ref.rank <= 20 * (j + 1)  # still one image of bin j + 1
    assert conflicts > 0  # the synthetic groups did conflict without the rule
    for j in range(9):  # each bin's images used once
        assert len({s.references[j].image_id for s in rec.image_sets}) == 10


def test_imi_no_reference_shares_its_query_group_both_sides():
    _, _, groups = _ranking()
    rec = _record("imi", groups)
    without = _record("imi", None)
    assert (rec.exclude_query_group.reused, rec.exclude_query_group.same_group) == (0, 0)
    conflicts = 0
    for s, old in zip(rec.image_sets, without.image_sets, strict=True):
        assert (s.query, s.min_query) == (old.query, old.min_query)
        conflicts += sum(_group(r) == _group(s.query) for r in old.references)
        conflicts += sum(_group(r) == _group(s.min_query) for r in old.min_references)
        assert all(_group(r) != _group(s.query) for r in s.references)
        assert all(_group(r) != _group(s.min_query) for r in s.min_references)
        for i, (ref, mref) in enumerate(zip(s.references, s.min_references, strict=True)):
            assert 20 * i < ref.rank <= 20 * (i + 1) and 20 * i < mref.rank <= 20 * (i + 1)
    assert conflicts > 0
    for side in ("references", "min_references"):  # every pool image used exactly once
        ranks = sorted(r.rank for s in rec.image_sets for r in getattr(s, side))
        assert ranks == list(range(1, 181))


@pytest.mark.parametrize("scheme", ["rank_bins", "imi"])
def test_seeded_result_is_deterministic(scheme):
    _, _, groups = _ranking()
    a, b = _record(scheme, groups), _record(scheme, list(groups))
    assert a.to_dict() == b.to_dict()
    assert _record(scheme, groups, seed=(0, 2)).to_dict() != a.to_dict()


@pytest.mark.parametrize("scheme", ["rank_bins", "imi"])
def test_without_conflicts_nothing_moves(scheme):
    """One group per image: the rule applies but picks exactly the seeded selection."""
    acts, ids, _ = _ranking()
    rec = _record(scheme, ids)
    assert rec.exclude_query_group is not None
    assert rec.image_sets == _record(scheme, None).image_sets


# Golden digests of exemplars/<unit>.json written by the code before source groups
# (same synthetic ranking, seed [0, 1]): with the option off nothing may change.
GOLDEN = {
    "rank_bins": "ad2092fbc49d1f9ca6415413c5e45749752a276737f55987711a0b4865e6a5d9",
    "imi": "7cb64ed0b716f56beef660395bbba3c07b7e19518c84c9f9ce617248b1cfe0a0",
}


@pytest.mark.parametrize("scheme", ["rank_bins", "imi"])
def test_option_off_gives_the_old_record_byte_for_byte(scheme, tmp_path):
    _, _, groups = _ranking()
    for g in (groups, None):
        rec = _record(scheme, g, exclude_query_group=False)
        assert rec.exclude_query_group is None
        paths = StudyPaths(tmp_path / f"s{g is None}")
        write_exemplars(paths, rec)
        assert hashlib.sha256(paths.exemplar(rec.key).read_bytes()).hexdigest() == GOLDEN[scheme]
    # no group known (all None): the rule cannot apply and is not recorded
    assert _record(scheme, [None] * N).exclude_query_group is None


def test_the_rule_is_recorded_and_read_back(tmp_path):
    _, _, groups = _ranking()
    rec = _record("imi", groups)
    raw = rec.to_dict()
    assert raw["exclude_query_group"] == {"grouping": "subfolder", "reused": 0, "same_group": 0}
    paths = StudyPaths(tmp_path)
    write_exemplars(paths, rec)
    assert read_exemplars(paths, rec.key) == rec
    with pytest.raises(CausalvisError, match="exclude_query_group"):
        ExemplarRecord.from_dict({**raw, "exclude_query_group": {"reused": 1}}, "x.json")


def test_assign_bin_swaps_within_the_bin_and_falls_back_recorded():
    group = {1: "a", 2: "b", 3: "a", 4: "a"}.get
    # greedy gives set 0 image 1, leaving set 1 (group b) nothing: the swap fixes it
    assert assign_bin([1, 2], ["c", "b"], group) == [2, 1]
    # no conflict: the seeded order itself
    assert assign_bin([1, 2, 3], [None, "c", "d"], group) == [1, 2, 3]
    # one eligible image for two sets of group a: used twice (the rule first)
    assert assign_bin([1, 2, 3], ["a", "a"], group) == [2, 2]
    # a bin entirely in the query's group: the seeded pick, unused ones first
    assert assign_bin([1, 3, 4], ["a", "a"], group) == [1, 3]


def test_fallbacks_are_counted_not_fatal():
    """Two groups of which one holds almost every image: the rule cannot always hold."""
    acts, ids, _ = _ranking()
    groups = ["big" if i % 50 else f"small{i}" for i in range(N)]
    rec = _record("rank_bins", groups)
    rule = rec.exclude_query_group
    assert rule.reused + rule.same_group > 0


# -- the groups of the image sources ---------------------------------------------------------


def test_samples_are_grouped_by_photo(samples):
    groups = source_groups(samples, "auto")
    assert groups.grouping == "photo"
    assert groups.of("chelsea/s0.60/r1c1") == "chelsea"
    assert {groups.of(i) for i in samples.ids} == {i.split("/")[0] for i in samples.ids}
    assert len(set(groups.by_id.values())) >= 5
    # the spec alone gives the same groups (the stage does not open the source)
    assert source_groups("samples", "auto", ids=samples.ids) == groups
    assert source_groups(samples, "none") is None
    with pytest.raises(CausalvisError, match="needs a folder source"):
        source_groups(samples, "subfolder")


def _folder(tmp_path: Path) -> FolderSource:
    from PIL import Image

    for rel in ("a/1.png", "a/2.png", "b/c/3.png", "4.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / rel)
    return FolderSource(tmp_path, 224)


def test_folder_groups_by_subfolder(tmp_path):
    src = _folder(tmp_path / "imgs")
    groups = source_groups(src, "subfolder")
    assert groups.grouping == "subfolder"
    assert groups.for_ids(src.ids) == [None, "a", "a", "b/c"]  # root image: no group
    # auto does not group a folder (class subfolders are not origins): only when asked.
    assert source_groups(src, "auto") is None


def test_folder_groups_by_csv(tmp_path):
    src = _folder(tmp_path / "imgs")
    csv = tmp_path / "groups.csv"
    csv.write_text("image_id,group\na/1.png,x\na/2.png,y\nb/c/3.png,x\n4.png,\nother.png,z\n")
    for mode in ("auto", "csv"):
        groups = source_groups(src, mode, csv)
        assert groups.grouping == "csv"
        assert groups.for_ids(src.ids) == [None, "x", "y", "x"]


@pytest.mark.parametrize("text, match", [
    (None, "file not found"),
    ("id,grp\n4.png,x\n", "header 'image_id,group'"),
    ("image_id,group\na/1.png,x\n", "3 of 4 images have no row"),
    ("image_id,group\na/1.png,x\na/1.png,y\n", "line 3: .* twice"),
    ("image_id,group\na/1.png\n", "line 2: expected image_id,group"),
    (b"\xff\xfe\x00bad", "cannot read"),
])
def test_a_bad_csv_is_one_error_line(tmp_path, text, match):
    src = _folder(tmp_path / "imgs")
    csv = tmp_path / "groups.csv"
    if isinstance(text, bytes):
        csv.write_bytes(text)
    elif text is not None:
        csv.write_text(text)
    with pytest.raises(CausalvisError, match=match) as err:
        source_groups(src, "csv", csv)
    assert "\n" not in str(err.value) and "groups_csv" in str(err.value)


def test_config_groups_options():
    assert ImagesConfig().groups == "auto" and ExemplarsConfig().exclude_query_group is True
    from causalvis.config import preset

    cfg = preset("quick")
    with pytest.raises((ConfigError, ValueError), match="groups_csv"):
        type(cfg).model_validate({**cfg.model_dump(), "images": {"groups": "csv"}})
    with pytest.raises((ConfigError, ValueError), match="subfolder"):
        ImagesConfig(groups="subfolder", groups_csv="g.csv")


def test_stage_csv_path_is_read_from_the_study_folder(tmp_path):
    from causalvis.pipeline.exemplars import study_groups

    (tmp_path / "groups.csv").write_text("image_id,group\na.png,x\nb.png,\n")
    cfg = SimpleNamespace(images=ImagesConfig(source="imgs", groups_csv="groups.csv"))
    ctx = SimpleNamespace(config=cfg, paths=StudyPaths(tmp_path))
    groups = study_groups(ctx, ["a.png", "b.png"])
    assert groups.grouping == "csv" and groups.by_id == {"a.png": "x"}


def test_stage_records_the_rule_for_the_samples(natural_study):
    """The small natural study scans samples: grouped by photo, rule on by default (its 48
    crops are all of one photo, so the fallback is recorded too)."""
    paths = natural_study.paths
    for unit in read_units(paths):
        rule = read_exemplars(paths, unit.key).exclude_query_group
        assert rule is not None and rule.grouping == "photo"
        assert rule.same_group > 0
