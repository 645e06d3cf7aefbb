"""StudyConfig: the validated study configuration (pydantic, TOML on disk), and presets.

Defaults are the ``paper2021`` values of PROTOCOL.md; presets (data in
``causalvis.presets``) override sections.
Every deviation from the paper is a named field here, so a study's ``study.toml``
says exactly what was run. Invalid values raise :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from causalvis.errors import ConfigError
from causalvis.presets import MODEL_UNITS, PRESETS, TASK_VARIANTS
from causalvis.store.layout import CONFIG_FILE

TASKS = ("causal_occlusion", "two_afc")
# Conditions without a minimal side: the 2-AFC task cannot show them.
TWO_AFC_UNSUPPORTED = ("none", "blur", "mixed")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = "lite0"
    weights: str | None = Field(None, description="state-dict path, 'random', or None")
    device: str = "cpu"
    tokens: Literal["patch", "cls", "all"] = Field(
        "patch", description="token layers of vision transformers: which tokens a unit's "
        "activation averages (patch = patch tokens only, class / register tokens dropped; "
        "cls = the class token; all = every token)"
    )
    fold_norms: bool = Field(
        True, description="run inference (scan, occlusion, trials, observers) and renders "
        "through a copy with eval BatchNorm folded into the convs: faster, same values "
        "within float rounding (~1e-6 relative); false = the model as loaded"
    )


class ImagesConfig(_Section):
    source: str = Field("samples", description="'samples' or a folder path")
    max_images: int | None = Field(None, ge=1, description="use only the first N images")
    groups: Literal["auto", "none", "subfolder", "csv"] = Field(
        "auto", description="which images share an origin (exemplars.exclude_query_group): "
        "auto = the source's own (samples: the photo a crop is cut from; a folder: groups_csv "
        "if set, else the subfolder), subfolder, csv (groups_csv), none"
    )
    groups_csv: str | None = Field(
        None, description="CSV with header image_id,group (one row per image, empty = none)"
    )

    @model_validator(mode="after")
    def _groups_source(self) -> ImagesConfig:
        if self.groups == "csv" and not self.groups_csv:
            raise ValueError('images.groups = "csv" needs images.groups_csv = PATH')
        if self.groups == "subfolder" and self.groups_csv:
            raise ValueError('images.groups_csv is set but images.groups = "subfolder": use '
                             '"csv" (or "auto") for the CSV, or remove images.groups_csv')
        return self


class ScanConfig(_Section):
    layers: list[str] = Field(default_factory=list, description="layers to scan; [] = unit layers")
    batch_size: int = Field(64, ge=1)
    shard_size: int = Field(2048, ge=1, description="images per resumable shard")
    workers: int = Field(2, ge=1, description="image decoding threads")
    dtype: Literal["float16", "float32", "auto"] = Field(
        "float16", description="shard precision: float16 (half the disk), float32, or auto "
        "(float32 for a layer whose values float16 would flush to 0 or overflow, per shard)"
    )


class UnitsConfig(_Section):
    mode: Literal["per_layer", "uniform_layer", "explicit"] = "per_layer"
    layers: list[str] = Field(default_factory=list, description="candidate layers")
    model_layers: dict[str, list[str]] = Field(
        default_factory=dict, description="multi-model studies: candidate layers per "
        "`models` entry (a CNN's layer names are not a ViT's); an entry not listed uses "
        "`layers`, and with `layers = []` every block layer of its model"
    )
    per_layer: int = Field(1, ge=1, description="units per layer (per_layer mode)")
    n_units: int = Field(18, ge=1, description="total units (uniform_layer mode)")
    explicit: list[str] = Field(default_factory=list, description="LAYER:CHANNEL list")
    n_practice_units: int = Field(
        4, ge=0, description="extra units sampled for practice trials only"
    )
    n_catch_units: int = Field(
        3, ge=0, description="extra units sampled for catch trials only (the paper: 3 easy "
        "units disjoint from the main ones); their easiest trials are the catch trials; 0 = "
        "catch trials from other units' trials (never the session's own units)"
    )
    seed: int = 0


class ExemplarsConfig(_Section):
    scheme: Literal["rank_bins", "imi"] = "rank_bins"
    n_top: int = Field(200, ge=2, description="most activating images used (rank_bins)")
    n_bins: int = Field(10, ge=2, description="rank bins of n_top / n_bins images")
    n_image_sets: int = Field(10, ge=1, description="image sets (queries) per unit")
    n_references: int = Field(9, ge=1)
    # imi scheme
    n_min_references: int = Field(9, ge=1)
    difficulty: Literal["easy", "hard99", "hard95", "hard85"] = Field(
        "easy", description="imi query window, one per study: easy = the n_image_sets ranks "
        "just below the references; hard99/95/85 = from the 1st/5th/15th percentile of each end"
    )
    exclude_query_group: bool = Field(
        True, description="no reference from its query's image group (images.groups), in "
        "both schemes; applies whenever groups are known, e.g. the samples' photos"
    )
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _no_query_windows(cls, data: Any) -> Any:
        """The removed mixed ``query_windows``: the old default is ``easy``; any other
        list mixed difficulties in one study and is refused with what to use instead."""
        if isinstance(data, dict) and "query_windows" in data:
            data = dict(data)
            windows = data.pop("query_windows")
            if [list(map(float, w)) for w in windows or []] != [[0.0, 0.0]]:
                raise ValueError(
                    "exemplars.query_windows was removed: a study has one difficulty; set "
                    'exemplars.difficulty = "easy" (the window just below the references), '
                    '"hard99", "hard95" or "hard85" (1st/5th/15th percentile), one study each'
                )
            data.setdefault("difficulty", "easy")
        return data

    @model_validator(mode="after")
    def _bins_divide(self) -> ExemplarsConfig:
        if self.scheme == "rank_bins":
            if self.n_top % self.n_bins:
                raise ValueError("exemplars.n_top must be a multiple of exemplars.n_bins")
            if self.n_references > self.n_bins - 1:
                raise ValueError("exemplars.n_references must be <= n_bins - 1 (one per lower bin)")
            if self.n_image_sets > self.n_top // self.n_bins:
                raise ValueError("exemplars.n_image_sets must be <= the bin size n_top / n_bins")
        return self


class OcclusionConfig(_Section):
    patch_fraction: float = Field(0.4, gt=0, lt=1, description="patch side / image side")
    stride: int = Field(2, ge=1, description="grid stride in pixels")
    fill: Literal["mean", "grey", "blur", "noise"] = "mean"
    engine: Literal["auto", "full", "incremental"] = Field(
        "auto", description="incremental = exact window-only recompute (allow-listed timm "
        "EfficientNet / MobileNetV3 block outputs, timm / torchvision ResNet block outputs and "
        "norm layers, torchvision GoogLeNet / inceptionv1 module outputs and branch layers, "
        "timm ConvNeXt block, stage, norm and MLP layers); auto = incremental where every "
        "module is allow-listed, else the truncated full sweep (one log line names the module type)"
    )
    batch_size: int = Field(64, ge=1)
    seed: int = 0


class TrialsConfig(_Section):
    option_b: Literal["argmin"] = "argmin"
    min_rel_diff: float = Field(0.0, ge=0, description="drop trials easier-to-tie than this")
    min_distance: float = Field(0.0, ge=0, description="min patch-centre distance in px")
    no_overlap: bool = False
    candidate_queries: int = Field(1, ge=1, description="query candidates per image set")
    tie_tolerance: float = Field(
        1e-3, ge=0, description="served-bytes check: drop if |A-B|/|base| falls below this"
    )


class BlurConfig(_Section):
    kernel: int = Field(21, ge=3, description="Gaussian kernel size (odd)")
    sigma: float | None = Field(None, description="None = OpenCV's rule from the kernel size")
    stride: int | None = Field(
        None, ge=1, description="grid stride of the sharp-window search; None = occlusion.stride"
    )

    @field_validator("kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("blur.kernel must be odd")
        return v


class FeatureVisConfig(_Section):
    param: Literal["fourier", "pixel"] = "fourier"
    decorrelate: bool = True
    size: int = Field(256, ge=16, description="optimized canvas side (px)")
    crop: int = Field(16, ge=0, description="border cropped from the final image (px)")
    jitter: int = 16
    scales: list[float] = Field(default_factory=lambda: [1.0, 0.975, 1.025, 0.95, 1.05])
    rotate_degrees: float = 5.0
    jitter_after: int = 8
    lr: float = Field(0.05, gt=0)
    steps: int = Field(2560, ge=1)
    diversity: float = Field(100.0, ge=0)
    n_images: int = Field(9, ge=1)
    n_non_diverse: int = Field(
        0, ge=0, description="of the n_images, how many are rendered alone without the "
        "diversity term (IMI shows one non-diverse image first)"
    )
    batch_units: int = Field(8, ge=1, description="units of one layer rendered per batch")
    seed: int = 0
    maco_steps: int = Field(256, ge=1)
    maco_canvas: int = Field(512, ge=64)
    also_render: list[str] = Field(
        default_factory=list,
        description="generated reference methods to render even if no condition uses them",
    )


class ConditionsConfig(_Section):
    names: list[str] = Field(
        default_factory=lambda: ["none", "natural", "synthetic", "mixed", "blur"]
    )
    n_references: int = Field(9, ge=1)
    mixed_natural: int = Field(5, ge=0)
    mixed_synthetic: int = Field(4, ge=0)
    mixed_synthetic_source: Literal["own", "synthetic"] = Field(
        "own", description="where the mixed condition's synthetic references come from: "
        "`own` = a separate optimisation of mixed_synthetic images (the diversity term over "
        "that batch, as the paper), `synthetic` = the first images of the synthetic "
        "condition's batch (one render fewer)"
    )


class SessionsConfig(_Section):
    n_catch: int = Field(3, ge=0)
    catch_rule: Literal["largest_rel_diff", "query_in_references"] = "largest_rel_diff"
    n_practice: int = Field(
        4, ge=0, description="practice trials each participant gets (drawn per participant)"
    )
    n_practice_obvious: int = Field(
        1, ge=0, description="of n_practice, how many come from the obvious (easiest) pool; "
        "the rest from the non-obvious pool (paper: 1 obvious + 3 non-obvious)"
    )
    practice_pool_factor: int = Field(
        2, ge=1, description="each practice pool holds up to this many times the trials drawn "
        "from it, so that participants get different practice trials"
    )
    responses_per_cell: int = Field(
        1, ge=1, description="planned responses per (unit, image set, condition)"
    )
    max_units_per_session: int = Field(18, ge=1)
    practice_in_none: bool = Field(
        False, description="give the `none` condition practice trials too (the paper gave it "
        "none: its sessions skip practice)"
    )
    seed: int = 0


# The paper's thresholds for `none` (PROTOCOL.md: no practice, instruction < 15 s, total
# outside 40-900 s).
_PAPER_NONE_EXCLUSION = {
    "min_instruction_time_s": 15.0, "min_total_time_s": 40.0, "max_total_time_s": 900.0,
}
# ExclusionConfig fields a condition may override (every threshold).
THRESHOLD_FIELDS = (
    "min_catch_accuracy", "min_total_time_s", "max_total_time_s", "min_instruction_time_s",
    "max_practice_attempts", "max_same_side_fraction", "min_choices_per_side", "min_rt_ms",
    "max_fast_fraction",
)


class ExclusionConfig(_Section):
    min_catch_accuracy: float = Field(2 / 3, ge=0, le=1)
    min_total_time_s: float = 90.0
    max_total_time_s: float = 900.0
    min_instruction_time_s: float = 20.0
    max_practice_attempts: int = 5
    max_same_side_fraction: float = Field(
        1.0,
        ge=0.5,
        le=1.0,
        description="exclude if one side was chosen more often (1.0 = only all)",
    )
    min_sided_trials: int = Field(
        2, ge=2, description="the same-side rule applies to participants with at least this "
        "many answers with a known side (an honest participant answers one side on all of n "
        "trials with probability 2^(1-n): tiny pilots raise it)"
    )
    min_choices_per_side: int = Field(
        0, ge=0, description="exclude if either on-screen option (row of confidence "
        "buttons) was chosen fewer times over main + catch trials (IMI: 5)"
    )
    min_rt_ms: float = Field(
        800.0, ge=0, description="answers faster than this are flagged as implausibly fast "
        "(dashboard and report)"
    )
    max_fast_fraction: float = Field(
        1.0, ge=0, le=1, description="exclude if more than this fraction of main + catch "
        "answers was faster than min_rt_ms (1.0 = flag only, never exclude)"
    )
    conditions: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {"none": dict(_PAPER_NONE_EXCLUSION)},
        description="per-condition overrides of the thresholds above, e.g. "
        "[exclusion.conditions.none] min_total_time_s = 40 (the paper's `none`, which had "
        "no practice: instruction >= 15 s, total 40-900 s)",
    )

    @model_validator(mode="after")
    def _overrides_valid(self) -> ExclusionConfig:
        for cond, fields in self.conditions.items():
            unknown = sorted(set(fields) - set(THRESHOLD_FIELDS))
            if unknown:
                raise ValueError(
                    f"conditions.{cond}: {', '.join(unknown)} is not a threshold "
                    f"(choose from {', '.join(THRESHOLD_FIELDS)})"
                )
            try:
                self.for_condition(cond)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                     for e in exc.errors())  # fmt: skip
                raise ValueError(f"conditions.{cond}: {problems}") from None
        return self

    def for_condition(self, condition: str | None) -> ExclusionConfig:
        """The thresholds in force for a participant of ``condition`` (its overrides over
        the study-wide values; the result has no overrides of its own)."""
        base = {k: getattr(self, k) for k in THRESHOLD_FIELDS}
        extra = self.conditions.get(str(condition), {}) if condition is not None else {}
        return ExclusionConfig.model_validate({**base, **extra, "conditions": {}})


class ServerConfig(_Section):
    abandon_after_minutes: float = Field(60.0, gt=0)
    prolific_completion_code: str = ""
    prolific_failed_checks_code: str = ""
    prolific_no_consent_code: str = ""
    show_feedback_question: bool = True
    correct_counter: bool = False
    overassign_factor: float = Field(
        1.0, ge=1.0, le=10.0, description="when every planned session is taken: 1.0 = refuse "
        "new participants ('study full'); > 1 = hand each session out up to planned x factor "
        "times, balanced"
    )
    prolific_full_code: str = Field(
        "", description="Prolific completion code for 'study full' (a screened-out code)"
    )
    prolific_screened_out_code: str = Field(
        "", description="Prolific code for people turned away by the device check "
        "(a screened-out code); empty = prolific_full_code"
    )
    checkpoint_interval_s: float = Field(
        30.0, ge=0, description="SQLite: checkpoint (and truncate) the WAL this often; 0 = "
        "only after a failed write"
    )
    progress_max_age_s: float = Field(
        5.0, ge=0, description="a study whose progress takes over 50 ms to compute: the "
        "dashboard gets the last report, recomputed in the background when older than this; "
        "0 = always compute"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=600, description="a connection whose request line and headers are "
        "not complete this long after its first byte (or its opening) is closed (slowloris)"
    )
    body_timeout_s: float = Field(
        10.0, gt=0, le=600, description="a request body not complete this long after its "
        "headers: 408, connection closed"
    )
    keep_alive_s: int = Field(
        5, ge=1, le=600, description="idle keep-alive connections are closed after this"
    )
    max_connections: int = Field(
        1000, ge=1, le=100_000, description="open connections (and requests in progress) "
        "per process; beyond it requests get 503 (the browser retries)"
    )


class ExperimentConfig(_Section):
    """What the browser does between a click and the next trial (the paper's answer step)."""

    min_view_ms: int = Field(
        500, ge=0, le=60_000, description="the answer buttons of a new trial stay disabled this "
        "long (IMI: 1500)"
    )
    advance: Literal["continue", "gap"] = Field(
        "continue", description="after an answer: a Continue button (the paper's plugin) or an "
        "automatic inter-trial gap"
    )
    continue_after_ms: int = Field(
        350, ge=0, le=60_000, description="the Continue button appears this long after a click"
    )
    gap_ms: int = Field(600, ge=0, le=60_000, description="advance = 'gap': blank time "
                        "between an answer and the next trial")
    keyboard: bool = Field(False, description="keys 1-3 / 8-0 answer (first / second image: "
                           "left / right, or top / bottom in 2-AFC); Enter continues")
    min_width: int = Field(940, ge=320, description="smallest browser window (px)")
    min_height: int = Field(600, ge=240, description="smallest browser window (px)")
    seconds_per_trial: float = Field(
        12.0, gt=0, description="for the duration estimate shown in consent and previews"
    )


class TextsConfig(_Section):
    """Participant-facing texts; empty = the built-in default (docs/server.md)."""

    title: str = "Image study"
    institution: str = Field("", description="who runs the study (consent page)")
    contact: str = Field("", description="how participants reach the researchers")
    ethics: str = Field("", description="ethics approval line (board, protocol number)")
    consent_file: str = Field(
        "", description="plain-text file (relative to the study folder) replacing the default "
        "consent body; paragraphs separated by blank lines"
    )
    instructions_note: str = Field("", description="an extra paragraph on the first "
                                   "instruction page")
    colour_vision_notice: str = (
        "The images are in colour. If you have a colour-vision deficiency you can still take "
        "part; please mention it in the comments at the end."
    )
    duration_minutes: float = Field(
        0.0, ge=0, description="stated study duration; 0 = estimated from the trial counts"
    )


class StudyConfig(_Section):
    """The whole study. ``study.toml`` is this model dumped to TOML."""

    name: str = "study"
    preset: str = "paper2021"
    task: Literal["causal_occlusion", "two_afc"] = "causal_occlusion"
    seed: int = 0
    models: list[str] = Field(
        default_factory=list,
        description="multi-model study, listed from smallest to largest model (the report "
        "asks whether the largest is the most interpretable): one sub-study per model under "
        "models/<name>/, merged into one session plan; [] = the single model of [model]",
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    dictionaries: dict[str, str] = Field(
        default_factory=dict,
        description="derived unit layers by name: NAME = PATH of a SAELens-style SAE folder "
        "(sae_weights.safetensors + cfg.json) or a directions folder (directions.safetensors "
        "+ cfg.json); units NAME:FEATURE, and NAME may stand in units.layers / scan.layers "
        "(docs/dictionaries.md). A relative PATH is read from the study folder",
    )
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    scan: ScanConfig = Field(default_factory=ScanConfig)
    units: UnitsConfig = Field(default_factory=UnitsConfig)
    exemplars: ExemplarsConfig = Field(default_factory=ExemplarsConfig)
    occlusion: OcclusionConfig = Field(default_factory=OcclusionConfig)
    trials: TrialsConfig = Field(default_factory=TrialsConfig)
    blur: BlurConfig = Field(default_factory=BlurConfig)
    featurevis: FeatureVisConfig = Field(default_factory=FeatureVisConfig)
    conditions: ConditionsConfig = Field(default_factory=ConditionsConfig)
    sessions: SessionsConfig = Field(default_factory=SessionsConfig)
    exclusion: ExclusionConfig = Field(default_factory=ExclusionConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)
    texts: TextsConfig = Field(default_factory=TextsConfig)

    @model_validator(mode="after")
    def _task_fits(self) -> StudyConfig:
        if self.featurevis.n_non_diverse > self.featurevis.n_images:
            raise ValueError("featurevis.n_non_diverse must be <= featurevis.n_images")
        if len(set(self.models)) != len(self.models):
            raise ValueError("models: a model is listed twice")
        stray = sorted(set(self.units.model_layers) - set(self.models))
        if stray:
            raise ValueError(f"units.model_layers: {', '.join(stray)} not in models "
                             f"({', '.join(self.models) or 'none'})")
        if self.sessions.n_practice_obvious > self.sessions.n_practice:
            raise ValueError("sessions.n_practice_obvious must be <= sessions.n_practice")
        known = ConditionsConfig.model_fields["names"].default_factory()
        typo = sorted(set(self.exclusion.conditions) - set(known) - set(self.conditions.names))
        if typo:
            raise ValueError(
                f"exclusion.conditions: unknown condition {', '.join(typo)} "
                f"(conditions: {', '.join(known)})"
            )
        if self.task != "two_afc":
            return self
        if self.exemplars.scheme != "imi":
            raise ValueError("task two_afc needs exemplars.scheme = 'imi' (min and max sets)")
        bad = [c for c in self.conditions.names if c in TWO_AFC_UNSUPPORTED]
        if bad:
            raise ValueError(
                f"conditions.names: {', '.join(bad)} cannot be used with task two_afc "
                "(it needs minimal and maximal references)"
            )
        return self

    # -- persistence -----------------------------------------------------------------
    def to_toml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        return tomli_w.dumps(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_toml())

    def digest(self, *sections: str) -> str:
        """Hash of the whole config, or of some sections: stage outputs store it so that a
        changed config invalidates exactly what depends on it."""
        data = self.model_dump(mode="json")
        if not data["units"]["model_layers"]:  # added later: studies built before keep
            del data["units"]["model_layers"]  # their stage digests (no rebuild)
        if data["model"]["fold_norms"]:  # likewise (the default since it was a switch)
            del data["model"]["fold_norms"]
        if sections:
            data = {s: data[s] for s in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def load(cls, path: str | Path) -> StudyConfig:
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILE
        if not path.is_file():
            raise ConfigError(f"no study config at {path} (create one with `causalvis init`)")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
        config = cls.from_dict(data, source=str(path))
        if config.dictionaries:  # relative to the study folder, wherever the command runs
            config.dictionaries = {
                name: str((path.parent / where).resolve()) if not Path(where).is_absolute()
                else where for name, where in config.dictionaries.items()}
        return config

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> StudyConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, source)) from exc


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem, each naming the dotted field path."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}")
    return f"{source}: invalid config: " + "; ".join(lines)


# -- presets -----------------------------------------------------------------------------


def preset(
    name: str,
    *,
    model: str | None = None,
    images: str | None = None,
    task: str | None = None,
    models: list[str] | None = None,
) -> StudyConfig:
    """A fresh config for a preset (``causalvis.presets``: overrides of the defaults);
    ``model`` / ``images`` override the preset's, ``task`` switches a causal-occlusion
    preset to the 2-AFC task (its variant: IMI exemplar scheme, natural and synthetic
    conditions, query-in-references catch trials), ``models`` makes it a multi-model
    study. A model in ``presets.MODEL_UNITS`` gets the preset's units overrides (layers or
    the paper's explicit units)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    entry = PRESETS[name]
    data: dict[str, Any] = {"name": name, "preset": name}
    _merge(data, entry["overrides"])
    native = entry["overrides"].get("task", TASKS[0])
    if task is not None and task != native:
        if task not in entry["variants"]:
            others = [p for p in PRESETS if _runs(p, task)]
            raise ConfigError(
                f"preset {name} is a {native} preset: use {' or '.join(others)}"
            )
        _merge(data, TASK_VARIANTS[task])
        _merge(data, entry["variants"][task])
    if models:
        data["models"] = list(models)
        model = model or models[0]
    if model is not None:
        _merge(data, {"model": {"name": model}})
    if images is not None:
        _merge(data, {"images": {"source": images}})
    studied = data.get("model", {}).get("name", ModelConfig().name)
    units = MODEL_UNITS.get(studied, {}).get(name)
    if units and not data.get("units", {}).get("layers"):
        _merge(data, {"units": units})
    return StudyConfig.from_dict(data, source=f"preset {name}")


def _runs(name: str, task: str) -> bool:
    """Whether preset ``name`` runs ``task`` (natively or as a variant)."""
    entry = PRESETS[name]
    return entry["overrides"].get("task", TASKS[0]) == task or task in entry["variants"]


def _merge(into: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Merge nested ``overrides`` into ``into`` (sections merged, values replaced; copied,
    so the preset data is never shared with a config)."""
    for key, value in overrides.items():
        if isinstance(value, dict):
            _merge(into.setdefault(key, {}), value)
        else:
            into[key] = copy.deepcopy(value)


def config_reference_markdown() -> str:
    """docs/config.md, generated from the model so it can never drift from the code."""
    lines = [
        "# Study config reference (`study.toml`)",
        "",
        "Generated from `causalvis.config.StudyConfig` (`python -m causalvis.config`).",
        "Defaults are the `paper2021` values of PROTOCOL.md; `causalvis init --preset`",
        "writes the preset's values. Unknown keys are rejected, and an invalid value is",
        "reported with its dotted field name.",
        "",
    ]
    top = StudyConfig()
    for name in StudyConfig.model_fields:
        value = getattr(top, name)
        if isinstance(value, BaseModel):
            continue
        lines.append(f"- `{name}` = `{json.dumps(value)}`")
    for name in StudyConfig.model_fields:
        section = getattr(top, name)
        if not isinstance(section, BaseModel):
            continue
        lines += ["", f"## [{name}]", "", "| field | default | meaning |", "|---|---|---|"]
        for fname, finfo in type(section).model_fields.items():
            default = json.dumps(getattr(section, fname))
            lines.append(f"| `{fname}` | `{default}` | {finfo.description or ''} |")
    presets = ["", "## Presets", ""]
    base = StudyConfig().model_dump(mode="json")
    for pname in PRESETS:
        diff = _dict_diff(base, preset(pname).model_dump(mode="json"))
        presets.append(
            f"- `{pname}`: "
            + (", ".join(f"`{k}` = `{json.dumps(v)}`" for k, v in diff) or "the defaults")
        )
    return "\n".join(lines + presets) + "\n"


def _dict_diff(a: dict, b: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in b.items():
        if isinstance(value, dict):
            out += _dict_diff(a.get(key, {}), value, f"{prefix}{key}.")
        elif a.get(key) != value:
            out.append((f"{prefix}{key}", value))
    return out


if __name__ == "__main__":
    print(config_reference_markdown(), end="")
