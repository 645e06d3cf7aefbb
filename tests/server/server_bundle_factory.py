"""A small but real study bundle in the format of docs/study-folder.md, for server tests.

Independent of the study builder: PNGs drawn with PIL under content-hashed names, a
trials.csv with ground truth, and a sessions.json over two conditions (``none`` without
references) x two image sets, with practice and catch trials. ``task="two_afc"`` writes the
2-AFC variant (minimal + maximal references, two queries as the options).

As the study builder does: the correct label is balanced within every session
(|#a - #b| <= 1 among scored trials) and the two option PNGs of a trial are padded to the
same byte length. ``pools=True`` writes the newer plan: per session a practice pool
(obvious + non-obvious, ``practice_obvious``), a ``practice_draw`` and a worked example
of kind ``example`` per condition that is used in no session.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageDraw

from causalvis.config import StudyConfig

CONDITIONS = ("none", "natural")
IMAGE_SETS = (0, 1)
UNITS = [("blocks.2.1", 5), ("blocks.4.2", 17)]
PRACTICE_UNIT = ("blocks.3.0", 2)
CATCH_UNIT = ("blocks.5.3", 9)
N_REFS = 9
SIZE = 96
ADMIN = "test-admin-token-0123456789"  # admin token used by the server tests


def _png(seed: int, box: tuple[int, int, int, int] | None = None) -> bytes:
    rnd = random.Random(seed)
    img = Image.new("RGB", (SIZE, SIZE), tuple(rnd.randrange(40, 215) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = rnd.randrange(SIZE), rnd.randrange(SIZE)
        r = rnd.randrange(6, 22)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rnd.randrange(256) for _ in range(3)))
    if box is not None:
        patch = img.crop(box).resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=patch)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _pad_png(data: bytes, length: int) -> bytes:
    """``data`` grown to ``length`` bytes by an ancillary chunk before IEND (pixels kept)."""
    body = b"\0" * (length - len(data) - 12)
    chunk = struct.pack(">I", len(body)) + b"pAdD" + body
    chunk += struct.pack(">I", zlib.crc32(b"pAdD" + body) & 0xFFFFFFFF)
    return data[:-12] + chunk + data[-12:]


def _same_size(*pngs: bytes) -> list[bytes]:
    """The PNGs padded to one byte length (as the study builder pads option pairs)."""
    target = max(len(x) for x in pngs) + 16
    return [_pad_png(x, target) for x in pngs]


def _store(assets: Path, data: bytes) -> str:
    name = hashlib.sha256(data).hexdigest()[:20] + ".png"
    (assets / name).write_bytes(data)
    return f"assets/{name}"


def make_study(
    root: Path,
    *,
    planned: int = 1,
    abandon_after_minutes: float = 60.0,
    task: str = "causal_occlusion",
    correct_counter: bool = False,
    units: list[tuple[str, int]] = UNITS,
    server: dict | None = None,
    pools: bool = False,
    config: dict | None = None,
) -> Path:
    """Write STUDY/{study.toml, trials.csv, bundle/sessions.json, bundle/assets/*.png}.

    ``units``: the main units (one main trial each per session).
    ``pools``: practice pools of 2 obvious + 2 non-obvious trials per session, a draw of
    1 obvious + 1 other, and an ``example`` trial per condition used in no session.
    ``config``: more sections of study.toml (e.g. ``{"texts": {...}}``).
    ``task="two_afc"``: the 2-AFC bundle of ``make_two_afc_study`` instead."""
    if task == "two_afc":
        return make_two_afc_study(root, planned=planned, correct_counter=correct_counter)
    assets = root / "bundle" / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    cfg = StudyConfig(
        name="servertest",
        conditions={"names": list(CONDITIONS)},
        server={
            "abandon_after_minutes": abandon_after_minutes,
            "prolific_completion_code": "C0MPLETE",
            "prolific_failed_checks_code": "FA1LED",
            "prolific_no_consent_code": "N0CONSENT",
            **(server or {}),
        },
        **(config or {}),
    )
    cfg.save(root / "study.toml")
    rows: list[dict] = []
    box_a, box_b = (0, 0, 38, 38), (58, 58, 96, 96)

    def base(kind: str, unit: tuple[str, int], image_set: int, seed: int, correct: str) -> dict:
        layer, channel = unit
        opt_a, opt_b = _same_size(_png(seed, box_a), _png(seed, box_b))
        return {
            "base_trial_id": f"b{seed:04d}",
            "kind": kind,
            "unit": f"{layer}:{channel}",
            "layer": layer,
            "channel": channel,
            "image_set": image_set,
            "query_asset": _store(assets, _png(seed)),
            "option_a_asset": _store(assets, opt_a),
            "option_b_asset": _store(assets, opt_b),
            "box_a": " ".join(map(str, box_a)),
            "box_b": " ".join(map(str, box_b)),
            "act_base": 2.0,
            "act_a": 1.5 if correct == "a" else 0.5,
            "act_b": 0.5 if correct == "a" else 1.5,
            "correct": correct,
            "rel_diff": 0.5,
            "refs": [_store(assets, _png(seed * 100 + i)) for i in range(N_REFS)],
        }

    sessions = []
    examples: dict[str, str] = {}
    n = 0
    n_practice = 4 if pools else 2
    for cond in CONDITIONS:
        for image_set in IMAGE_SETS:
            sid = f"s{len(sessions):04d}"
            main, practice = [], []
            labels = iter("ab" * 20 if len(sessions) % 2 else "ba" * 20)  # balanced per session
            for kind, kind_units in (("practice", [PRACTICE_UNIT] * n_practice),
                                     ("main", units), ("catch", [CATCH_UNIT])):  # fmt: skip
                for j, unit in enumerate(kind_units):
                    seed = 1000 * (kind == "catch") + 100 * (kind == "practice") + 10 * j
                    row = base(kind, unit, image_set, seed + image_set + 1, next(labels))
                    n += 1
                    row["trial_id"] = f"t{n:04d}"
                    row["condition"] = cond
                    row["reference_assets"] = "" if cond == "none" else " ".join(row["refs"])
                    rows.append(row)
                    (practice if kind == "practice" else main).append(row["trial_id"])
            random.Random(len(sessions)).shuffle(main)
            sessions.append({"session_id": sid, "condition": cond, "image_set": image_set,
                             "trials": main, "practice": practice,
                             "planned_participants": planned})  # fmt: skip
            if pools:
                sessions[-1]["practice_obvious"] = practice[:2]
            else:
                examples.setdefault(cond, practice[0])
        if pools:  # the worked example: its own trial and images, in no session
            row = base("example", PRACTICE_UNIT, 0, 7000 + len(examples), "a")
            n += 1
            row |= {"trial_id": f"t{n:04d}", "condition": cond,
                    "reference_assets": "" if cond == "none" else " ".join(row["refs"])}
            rows.append(row)
            examples[cond] = row["trial_id"]
    columns = ["trial_id", "base_trial_id", "kind", "condition", "unit", "layer", "channel",
               "image_set", "query_asset", "option_a_asset", "option_b_asset",
               "reference_assets", "box_a", "box_b", "act_base", "act_a", "act_b", "correct",
               "rel_diff"]  # fmt: skip
    with (root / "trials.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plan = {"study": "servertest", "task": "causal_occlusion", "config_hash": cfg.digest(),
            "conditions": list(CONDITIONS), "sessions": sessions,
            "instructions_example": examples,
            "n_participants_needed": planned * len(sessions)}  # fmt: skip
    if pools:
        plan["practice_draw"] = {"n_total": 2, "n_obvious": 1}
    (root / "bundle" / "sessions.json").write_text(json.dumps(plan, indent=2))
    return root


TWO_AFC_CONDITIONS = ("natural", "synthetic")
TWO_AFC_MODEL = "lite0"


def _tinted_png(seed: int, side: str) -> bytes:
    """A random blob picture tinted warm (``max``) or cool (``min``): the two sides of a
    2-AFC trial look different, as they do for a real unit."""
    img = Image.open(io.BytesIO(_png(seed))).convert("RGB")
    tint = Image.new("RGB", img.size, (230, 90, 40) if side == "max" else (40, 90, 230))
    buf = io.BytesIO()
    Image.blend(img, tint, 0.45).save(buf, format="PNG")
    return buf.getvalue()


def make_two_afc_study(root: Path, *, planned: int = 1, correct_counter: bool = False) -> Path:
    """A 2-AFC bundle in the format of the contract: per trial N_REFS maximal and N_REFS
    minimal references, two queries as the options (no single query), the maximal query
    correct; catch trials show each query among its own side's references. Two conditions
    x two image sets, two practice, two main and one catch trial per session; a worked
    example of kind ``example`` per condition, used in no session."""
    assets = root / "bundle" / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    cfg = StudyConfig(
        name="servertest2afc",
        task="two_afc",
        exemplars={"scheme": "imi"},
        conditions={"names": list(TWO_AFC_CONDITIONS)},
        server={"abandon_after_minutes": 60.0, "correct_counter": correct_counter},
    )
    cfg.save(root / "study.toml")
    rows: list[dict] = []
    sessions = []
    examples: dict[str, str] = {}
    n = 0
    def add(kind: str, cond: str, layer: str, channel: int, image_set: int, seed: int) -> str:
        nonlocal n
        q_max, q_min = (_store(assets, x) for x in _same_size(
            _tinted_png(seed, "max"), _tinted_png(seed + 5000, "min")))
        max_refs = [_store(assets, _tinted_png(seed * 100 + i, "max"))
                    for i in range(N_REFS)]  # fmt: skip
        min_refs = [_store(assets, _tinted_png(seed * 100 + 50 + i, "min"))
                    for i in range(N_REFS)]  # fmt: skip
        if kind == "catch":
            max_refs[-1], min_refs[-1] = q_max, q_min
        correct = "a" if (seed + n) % 2 else "b"
        a, b = (q_max, q_min) if correct == "a" else (q_min, q_max)
        n += 1
        rows.append({
            "trial_id": f"t{n:04d}", "base_trial_id": f"b{seed:04d}",
            "kind": kind, "condition": cond, "unit": f"{layer}:{channel}",
            "layer": layer, "channel": channel, "image_set": image_set,
            "query_asset": "", "option_a_asset": a, "option_b_asset": b,
            "reference_assets": " ".join(max_refs),
            "min_reference_assets": " ".join(min_refs),
            "box_a": "", "box_b": "", "act_base": "",
            "act_a": 3.0 if correct == "a" else -1.0,
            "act_b": -1.0 if correct == "a" else 3.0,
            "correct": correct, "rel_diff": 0.8, "model": TWO_AFC_MODEL,
        })  # fmt: skip
        return f"t{n:04d}"

    for cond in TWO_AFC_CONDITIONS:
        for image_set in IMAGE_SETS:
            sid = f"s{len(sessions):04d}"
            main, practice = [], []
            for kind, units in (("practice", [PRACTICE_UNIT] * 2), ("main", UNITS),
                                ("catch", [CATCH_UNIT])):  # fmt: skip
                for j, (layer, channel) in enumerate(units):
                    seed = 1000 * (kind == "catch") + 100 * (kind == "practice") + 10 * j
                    tid = add(kind, cond, layer, channel, image_set, seed + image_set + 1)
                    (practice if kind == "practice" else main).append(tid)
            random.Random(len(sessions)).shuffle(main)
            sessions.append({"session_id": sid, "condition": cond, "image_set": image_set,
                             "trials": main, "practice": practice, "model": TWO_AFC_MODEL,
                             "planned_participants": planned})  # fmt: skip
        # The worked example: its own trial and images, in no session.
        examples[cond] = add("example", cond, *PRACTICE_UNIT, 0, 7000 + 10 * len(examples))
    columns = ["trial_id", "base_trial_id", "kind", "condition", "unit", "layer", "channel",
               "image_set", "query_asset", "option_a_asset", "option_b_asset",
               "reference_assets", "min_reference_assets", "box_a", "box_b", "act_base",
               "act_a", "act_b", "correct", "rel_diff", "model"]  # fmt: skip
    with (root / "trials.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    plan = {"study": "servertest2afc", "task": "two_afc", "config_hash": cfg.digest(),
            "conditions": list(TWO_AFC_CONDITIONS), "sessions": sessions,
            "instructions_example": examples,
            "n_participants_needed": planned * len(sessions)}  # fmt: skip
    (root / "bundle" / "sessions.json").write_text(json.dumps(plan, indent=2))
    return root


def truth(root: Path) -> dict[str, dict]:
    """trial_id -> row of the private table (for checking what the server stored)."""
    with (root / "trials.csv").open(newline="") as fh:
        return {row["trial_id"]: row for row in csv.DictReader(fh)}
