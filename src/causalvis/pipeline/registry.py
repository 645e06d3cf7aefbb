"""Which stages a task has: the ordered ``stage name -> "module:function"`` of each task.

``causalvis build --stage NAME`` names a stage; the study's task picks its implementation
(both tasks have a ``trials`` stage, each its own), so no stage looks at the task itself.
A stage name that a task lacks (``occlusion`` for ``two_afc``) is skipped with a log line.
The functions are imported only when a stage runs, so ``--help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from causalvis.errors import CausalvisError


@dataclass(frozen=True)
class Task:
    """A task's stages in build order, and the reference sides its trials show."""

    name: str
    stages: dict[str, str]
    sides: tuple[str, ...] = ("max",)


_COMMON_HEAD = {
    "scan": "causalvis.pipeline.scan:run_scan_stage",
    "units": "causalvis.pipeline.units:run_units_stage",
    "exemplars": "causalvis.pipeline.exemplars:run_exemplars_stage",
    "blur": "causalvis.pipeline.blur:run_blur_stage",
}
_COMMON_TAIL = {
    "references": "causalvis.pipeline.references:run_references_stage",
    "sessions": "causalvis.pipeline.sessions:run_sessions_stage",
}

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("causal_occlusion", {
            **_COMMON_HEAD,
            "occlusion": "causalvis.pipeline.occlusion:run_occlusion_stage",
            "trials": "causalvis.pipeline.trials:run_trials_stage",
            **_COMMON_TAIL,
        }),
        # The IMI 2-AFC task: query pairs from the exemplars, no occlusion maps; it shows
        # maximal and minimal references.
        Task("two_afc", {
            **_COMMON_HEAD,
            "trials": "causalvis.pipeline.two_afc:run_two_afc_trials",
            **_COMMON_TAIL,
        }, sides=("max", "min")),
    )
}

# Every stage name in build order (the union of the tasks' lists).
STAGE_NAMES: tuple[str, ...] = (
    *_COMMON_HEAD, "occlusion", "trials", *_COMMON_TAIL,
)


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise CausalvisError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return TASKS[name]


def check_stage_names(names: list[str]) -> None:
    for name in names:
        if name not in STAGE_NAMES:
            raise CausalvisError(
                f"unknown stage {name!r}: choose from {', '.join(STAGE_NAMES)}"
            )
