"""Source groups: which images come from one origin (one photo, one subfolder, a CSV).

Exemplar selection keeps a query's group out of its references
(``exemplars.exclude_query_group``): references cropped from the query's own photo make
the task trivially easy. ``images.groups`` says where groups come from:

* ``auto`` — the source's natural grouping: the embedded samples by the photo a crop was
  cut from (the first part of ``chelsea/s0.60/r1c1``); a folder by ``images.groups_csv``
  when set, else none (a folder sorted into class subfolders must not lose its query's
  class from the references: ask for ``subfolder`` explicitly);
* ``subfolder`` — a folder image's group is the folder it lies in (its id without the
  file name); images directly in the root folder belong to no group;
* ``csv`` — ``images.groups_csv``: a CSV with header ``image_id,group``; every image of
  the source needs a row (an empty group = no group), extra rows are ignored;
* ``none`` — no groups.

An image without a group never conflicts with any other.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from causalvis.errors import CausalvisError

GROUPINGS = ("auto", "none", "subfolder", "csv")


@dataclass(frozen=True)
class ImageGroups:
    """Groups of a source's images: ``grouping`` names the origin (``photo``,
    ``subfolder`` or ``csv``); ids without a group are absent from ``by_id``."""

    grouping: str
    by_id: Mapping[str, str]

    def of(self, image_id: str) -> str | None:
        return self.by_id.get(image_id)

    def for_ids(self, ids: Sequence[str]) -> list[str | None]:
        return [self.by_id.get(i) for i in ids]

    @property
    def digest(self) -> str:
        """Changes whenever any image's group does (stage stamps)."""
        text = "\n".join(f"{k}\t{v}" for k, v in sorted(self.by_id.items()))
        return hashlib.sha256(f"{self.grouping}\n{text}".encode()).hexdigest()[:16]


def subfolder_group(image_id: str) -> str | None:
    """A folder image's group: its folder relative to the root (None at the root)."""
    head, sep, _ = image_id.rpartition("/")
    return head if sep else None


def photo_group(image_id: str) -> str:
    """An embedded sample's group: the photo it was cropped from."""
    return image_id.split("/", 1)[0]


def read_groups_csv(path: str | Path, ids: Sequence[str]) -> dict[str, str]:
    """``image_id -> group`` for ``ids`` from a CSV (see the module docstring); any
    problem is one :class:`CausalvisError` naming the file (and line)."""
    path = Path(path).expanduser()
    where = f"images.groups_csv {path}"
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise CausalvisError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CausalvisError(f"{where}: cannot read ({exc})") from None
    if not rows or [c.strip() for c in rows[0][:2]] != ["image_id", "group"]:
        raise CausalvisError(f"{where}: the first line must be the header 'image_id,group'")
    table: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < 2:
            raise CausalvisError(f"{where}: line {line}: expected image_id,group, got {row!r}")
        image_id, group = row[0].strip(), row[1].strip()
        if image_id in table and table[image_id] != group:
            raise CausalvisError(
                f"{where}: line {line}: image {image_id!r} listed twice with different groups"
            )
        table[image_id] = group
    missing = [i for i in ids if i not in table]
    if missing:
        raise CausalvisError(
            f"{where}: {len(missing)} of {len(ids)} images have no row, e.g. {missing[0]!r} "
            "(one row per image; an empty group = no group)"
        )
    return {i: table[i] for i in ids if table[i]}


def natural_grouping(spec: str | Path) -> str:
    """The grouping ``auto`` means for ``images.source = spec`` (as ``open_source`` reads
    it), known without opening the source."""
    return "photo" if str(spec) == "samples" else "none"


def source_groups(
    source, mode: str, groups_csv: str | Path | None = None, ids: Sequence[str] | None = None
) -> ImageGroups | None:
    """The groups of the images ``ids`` (default all of ``source``) under ``images.groups
    = mode``; None when ``mode = "none"``. ``source`` is an :class:`ImageSource` or an
    ``images.source`` spec (then ``ids`` are needed; nothing is opened)."""
    if mode not in GROUPINGS:
        raise CausalvisError(f"images.groups = {mode!r} is not one of {', '.join(GROUPINGS)}")
    if mode == "none":
        return None
    if isinstance(source, str | Path):
        if ids is None:
            raise ValueError("source_groups: a source spec needs the ids")
        natural, name = natural_grouping(source), str(source)
    else:
        natural, name = source.natural_grouping, source.name
    ids = list(source.ids if ids is None else ids)
    if mode == "auto":
        mode = "csv" if groups_csv else natural
        if mode == "none":
            return None
    if mode == "csv":
        if not groups_csv:
            raise CausalvisError('images.groups = "csv" needs images.groups_csv = PATH')
        return ImageGroups("csv", read_groups_csv(groups_csv, ids))
    if mode == "photo":
        return ImageGroups("photo", {i: photo_group(i) for i in ids})
    if natural == "photo":  # the embedded samples have no subfolders
        raise CausalvisError(
            f'images.groups = "subfolder" needs a folder source, not {name}: use '
            '"auto" (the samples are grouped by photo), "csv" or "none"'
        )
    return ImageGroups("subfolder", {i: g for i in ids if (g := subfolder_group(i))})
