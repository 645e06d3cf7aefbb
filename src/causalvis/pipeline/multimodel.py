"""Multi-model studies: one study folder that compares several models.

A study whose config lists ``models = ["lite0", "lite1", …]`` holds one ordinary
single-model study per model under ``models/<name>/`` (its ``study.toml`` is the parent's
config with ``model.name = <name>`` and no ``models``). Every per-model stage (scan …
references) runs in the sub-studies; the parent's ``sessions`` stage merges their trials
into one bundle whose ``trials.csv`` carries a ``model`` column and whose sessions each
show one model (as IMI did). Edit the parent's ``study.toml``: the sub-studies' configs are
derived from it on every build.

Neurons vs dictionary features (docs/dictionaries.md): an entry ``BASE+DICT`` (e.g.
``lite0+sae1``, with ``sae1`` in ``[dictionaries]``) is model ``BASE`` whose units are the
features of dictionary ``DICT``: its sub-study has ``model.name = BASE`` and
``units.layers = [DICT]``. ``models = ["lite0", "lite0+sae1"]`` with ``units.layers`` the
dictionary's layer compares the layer's neurons with its features like two models.

Models with different layer names (a CNN and a ViT): ``units.model_layers`` gives an
entry its own candidate layers; an entry not listed uses ``units.layers``, and with
``units.layers = []`` every block layer of its own model (the scan's default).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from causalvis.config import StudyConfig
from causalvis.errors import CausalvisError
from causalvis.store.layout import StudyPaths, atomic_write

log = logging.getLogger("causalvis.multimodel")

_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def substudy_folder(model: str) -> str:
    """A safe folder name for a ``models`` entry: ``timm:resnet50`` -> ``timm__resnet50``; a
    ``python:`` entry (a file path, any characters) -> ``python__FILE-STEM__FACTORY-HASH``
    (``python__MODULE__FACTORY-HASH`` for a module),
    short and one folder deep, the hash of the whole entry keeping distinct files apart."""
    if model.startswith("python:"):
        spec, _, factory = model[len("python:"):].rpartition(":")
        is_file = "/" in spec or "\\" in spec or spec.endswith(".py")
        stem = Path(spec.replace("\\", "/")).stem if is_file else spec  # or the module
        digest = hashlib.sha256(model.encode()).hexdigest()[:8]
        name = f"python__{stem}__{factory}" if spec else f"python__{factory}"
        return _SAFE.sub("_", name)[:80] + f"-{digest}"
    return _SAFE.sub("_", model.replace(":", "__"))


def substudy_paths(paths: StudyPaths, model: str) -> StudyPaths:
    """Folder of one model's sub-study (:func:`substudy_folder`)."""
    return StudyPaths(paths.substudies / substudy_folder(model))


def split_model_entry(entry: str, config: StudyConfig) -> tuple[str, str | None]:
    """``BASE+DICT`` -> (BASE, DICT) with DICT registered in ``[dictionaries]``; a plain
    model name -> (name, None)."""
    base, plus, dictionary = entry.rpartition("+")
    if not plus:
        return entry, None
    if not base or dictionary not in config.dictionaries:
        known = ", ".join(config.dictionaries) or "none registered"
        raise CausalvisError(f"models: {entry!r} names dictionary {dictionary!r}, which is not "
                             f"in [dictionaries] ({known})")
    return base, dictionary


def substudy_config(parent: StudyConfig, model: str, root: Path) -> StudyConfig:
    """The parent's config for one model; a relative image folder is resolved against the
    parent's folder so the sub-study reads the same images. A ``BASE+DICT`` entry's units
    are dictionary ``DICT``'s features."""
    data = parent.model_dump(mode="json")
    data["models"] = []
    base, dictionary = split_model_entry(model, parent)
    data["model"]["name"] = base
    data["units"]["model_layers"] = {}
    if model in parent.units.model_layers:  # this model's own layer names
        data["units"]["layers"] = list(parent.units.model_layers[model])
        if data["scan"]["layers"]:
            data["scan"]["layers"] = list(parent.units.model_layers[model])
    if dictionary is not None:
        if parent.units.mode == "explicit":
            raise CausalvisError(f"models: {model!r} needs units.mode per_layer or "
                                 "uniform_layer (its units are sampled from the dictionary)")
        data["units"]["layers"] = [dictionary]
        if data["scan"]["layers"]:
            data["scan"]["layers"] = [dictionary]
    source = data["images"]["source"]
    if source != "samples" and not Path(source).is_absolute():
        data["images"]["source"] = str((root / source).resolve())
    return StudyConfig.model_validate(data)


def ensure_substudies(paths: StudyPaths, config: StudyConfig) -> dict[str, StudyPaths]:
    """Create or update ``models/<name>/study.toml`` for every model; returns their paths.

    A sub-study config that differs from the derived one is rewritten (and logged): the
    stamps of its stages then decide what has to be recomputed.
    """
    if not config.models:
        raise CausalvisError(f"{paths.config}: not a multi-model study (models = [])")
    out = {}
    for model in config.models:
        sub = substudy_paths(paths, model)
        text = substudy_config(config, model, paths.root).to_toml()
        if not sub.config.is_file() or sub.config.read_text() != text:
            if sub.config.is_file():
                log.info("models/%s: study.toml updated from the parent config", sub.root.name)
            sub.root.mkdir(parents=True, exist_ok=True)
            atomic_write(sub.config, text)
        out[model] = sub
    return out


def existing_substudies(paths: StudyPaths, config: StudyConfig) -> dict[str, StudyPaths]:
    """Sub-study folders of a multi-model study without writing anything (for readers)."""
    return {m: substudy_paths(paths, m) for m in config.models}
