"""``causalvis demo``: the whole study on the embedded model and images, end to end.

init (quick preset) → build every stage → machine observers → a simulated pilot
(simulated participants drive the real HTTP API of an in-process server, into a separate
database) → analysis report → serve the study for humans (unless ``--no-serve``).
Rerunning reuses everything already built.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from causalvis.config import StudyConfig
from causalvis.errors import CausalvisError
from causalvis.store.layout import StudyPaths

log = logging.getLogger("causalvis.demo")

PILOT_DB = "simulated-pilot.sqlite"


@contextmanager
def background_server(study: Path, db_url: str) -> Iterator[str]:
    """The real app (rate limit off) on a free loopback port, for the simulated pilot."""
    from causalvis.server.app import create_app
    from causalvis.server.guards import Rate
    from causalvis.server.run import serve_in_thread

    # More simulated participants than the plan has places: the pilot over-assigns.
    app = create_app(study, db_url, admin_token="demo-pilot-token", create_rate=Rate(0, 1.0),
                     overassign_factor=10.0)
    with serve_in_thread(app) as url:
        yield url


DEFAULT_STRATEGY = {"causal_occlusion": "reference_image", "two_afc": "mis"}


def ensure_study(out: Path, task: str = "causal_occlusion") -> StudyConfig:
    """Create the quick demo study of ``task``, or reuse one that is already there."""
    from causalvis.config import TASKS
    from causalvis.pipeline.build import init_study

    if task not in TASKS:
        raise CausalvisError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    paths = StudyPaths(out)
    if paths.config.is_file():
        cfg = StudyConfig.load(paths.config)
        if cfg.preset != "quick" or cfg.task != task:
            raise CausalvisError(
                f"{out} holds a {cfg.preset!r} {cfg.task} study, not the {task} demo: "
                "choose another --out"
            )
        return cfg
    return init_study(out, "quick", task=task)


def run_pilot(
    study: Path, *, participants: int, strategy: str, lapse: float, echo: Callable[[str], None]
) -> Path:
    """Simulated participants through the real API into STUDY/simulated-pilot.sqlite."""
    from causalvis.observers.simulate import SimSettings, build_strategy, simulate

    db_path = study / PILOT_DB
    if db_path.exists():
        db_path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    db_url = f"sqlite:///{db_path}"
    strat = build_strategy(study, strategy)
    settings = SimSettings(strategy=strategy, lapse=lapse, seed=0, id_prefix="pilot")
    with background_server(study, db_url) as url:
        result = simulate(url, strat, participants, settings, concurrency=4)
    echo(
        f"pilot      {participants} simulated participants ({strategy}, lapse {lapse}) "
        f"in {result.elapsed_s:.1f} s"
    )
    return db_path


def run_demo(
    out: str | Path = "demo-study",
    *,
    serve: bool = True,
    host: str = "127.0.0.1",
    port: int = 8000,
    participants: int = 20,
    task: str = "causal_occlusion",
    strategy: str | None = None,
    lapse: float = 0.1,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, float]:
    """Run the demo; returns seconds per step (also printed)."""
    from causalvis.analysis.report import analyze_study
    from causalvis.observers.observe import observe
    from causalvis.pipeline.build import build

    out = Path(out).resolve()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    cfg = ensure_study(out, task)
    strategy = strategy or DEFAULT_STRATEGY[cfg.task]
    echo(
        f"study      {out} (preset {cfg.preset}, model {cfg.model.name}, images {cfg.images.source})"
    )
    for name, seconds in build(out, progress=progress).items():
        timings[f"build:{name}"] = seconds
    t = time.perf_counter()
    result = observe(out)
    timings["observe"] = time.perf_counter() - t
    for line in _observer_lines(out):
        echo(line)
    t = time.perf_counter()
    db_path = run_pilot(out, participants=participants, strategy=strategy, lapse=lapse, echo=echo)
    timings["pilot"] = time.perf_counter() - t
    t = time.perf_counter()
    exclusion = pilot_exclusion(cfg)
    _, report = analyze_study(
        out,
        db_url=f"sqlite:///{db_path}",
        exclusion=exclusion,
        source=(
            f"{out}: SIMULATED pilot — {participants} simulated participants following the "
            f"{strategy} observer with lapse rate {lapse} (not human data; the time-window "
            "exclusions are off because simulated participants answer instantly)"
        ),
    )
    timings["analyze"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    del result
    echo(f"report     {report}")
    echo(
        "timing     "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items() if not k.startswith("build:"))
        + " | build: "
        + ", ".join(f"{k[6:]} {v:.1f}s" for k, v in timings.items() if k.startswith("build:"))
    )
    if serve:
        from causalvis.server.run import serve as serve_study

        echo("serving    the demo study for human participants (Ctrl-C to stop)")
        serve_study(out, host=host, port=port, echo=echo)
    return timings


def _observer_lines(study: Path) -> list[str]:
    from causalvis.store.reports import read_observers_report

    data = read_observers_report(StudyPaths(study))
    if data is None:
        return []
    lines = []
    for name, obs in data.get("observers", {}).items():
        parts = []
        for cond, stats in obs.get("conditions", {}).items():
            acc = stats.get("accuracy")
            if acc is not None:
                parts.append(f"{cond} {acc:.2f}")
        if parts:
            lines.append(f"observer   {name:<16} " + "  ".join(parts))
    return lines


def pilot_exclusion(cfg: StudyConfig):  # noqa: ANN201 - an ExclusionConfig
    """The study's exclusion rules for a simulated pilot: simulated participants answer
    instantly, so the time-window criteria would exclude all of them; they are switched off
    (the report says so) in every condition, the per-condition thresholds of `none` too."""
    from causalvis.responses.exclusion import resolve_exclusion

    off = {"min_total_time_s": 0.0, "min_instruction_time_s": 0.0}
    per_condition = {c: {k: v for k, v in fields.items() if k not in off}
                     for c, fields in cfg.exclusion.conditions.items()}  # fmt: skip
    return resolve_exclusion(cfg, {**off, "conditions": {
        c: f for c, f in per_condition.items() if f}})
