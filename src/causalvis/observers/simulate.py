"""Simulated participants that drive the real HTTP API of ``causalvis serve``.

Each one goes through the same steps as a browser: create participant, consent,
instructions, practice (repeated with a new attempt number until the server says it is
passed), every main trial, finish. Choices come from a *strategy* (``oracle``, ``random``
or a machine observer's decisions), with a lapse rate (a lapse is a fair coin) and
lognormal reaction times. Catch and practice trials are answered like an attentive
participant (the truth, subject to lapses); main trials where the observer does not apply
(reference observers in ``none``) get a coin.

The simulator knows each choice's correctness from the private ``trials.csv``, so its own
per-condition accuracy is exactly what the analysis must report for the same responses.
Like the browser it answers with the opaque option ids of the payload: it finds the id
of the label it picked by the option's image (``option_a_asset`` / ``option_b_asset``).
Requests are retried with exponential backoff (the API is idempotent per participant and
trial). ``pace`` > 0 really waits ``pace`` × the simulated times (load tests, or passing
the total-time exclusion, which uses the server clock).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
import numpy as np

from causalvis.errors import CausalvisError

RETRY_STATUS = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class SimSettings:
    strategy: str = "oracle"
    lapse: float = 0.0
    rt_median_ms: float = 2500.0
    rt_sigma: float = 0.6
    instruction_median_s: float = 45.0
    pace: float = 0.0
    seed: int = 0
    platform: str = "local"
    id_prefix: str = "sim"
    max_retries: int = 6
    backoff_s: float = 0.1
    max_wait_s: float = 600.0  # total time a participant may wait on Retry-After
    max_practice_attempts: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.lapse <= 1.0:
            raise CausalvisError(f"--lapse must be in [0, 1], got {self.lapse}")
        if self.pace < 0:
            raise CausalvisError(f"pace must be >= 0, got {self.pace}")


@dataclass
class Strategy:
    """How a simulated participant picks an option.

    ``truth``: trial_id -> correct option (from trials.csv); ``kinds``: trial_id -> kind;
    ``decisions``: trial_id -> the observer's choice (observer strategies only);
    ``assets``: trial_id -> label -> the option's asset file name (to find its option id).
    """

    name: str
    truth: Mapping[str, str]
    kinds: Mapping[str, str]
    decisions: Mapping[str, str] = field(default_factory=dict)
    assets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def option_id(self, trial: Mapping, label: str) -> str:
        """The payload's option id of ``label`` (matched by the option's image file)."""
        name = self.assets.get(str(trial.get("trial_id")), {}).get(label)
        found = [str(o["id"]) for o in trial.get("options") or ()
                 if name and str(o.get("src", "")).rsplit("/", 1)[-1] == name]  # fmt: skip
        if len(found) == 1:
            return found[0]
        if found:
            raise CausalvisError(f"trial {trial.get('trial_id')!r}: both options show the same "
                                 "image; nobody can tell them apart")
        raise CausalvisError(f"trial {trial.get('trial_id')!r}: no option shows the image of "
                             f"label {label!r} (is the strategy from this study's trials.csv?)")

    def choose(self, trial_id: str, rng: np.random.Generator, lapse: float) -> tuple[str, bool]:
        """(choice, guessed): guessed = chosen by a coin (lapse or no applicable rule)."""
        coin = "a" if rng.random() < 0.5 else "b"
        if rng.random() < lapse:
            return coin, True
        truth = self.truth.get(trial_id)
        if truth is None:
            return coin, True
        if self.kinds.get(trial_id) != "main" or self.name == "oracle":
            return truth, False
        if self.name == "random":
            return coin, True
        choice = self.decisions.get(trial_id, "")
        return (choice, False) if choice in ("a", "b") else (coin, True)


@dataclass
class SimParticipant:
    index: int
    external_id: str
    token: str = ""
    condition: str = ""
    completion_code: str | None = None
    practice_attempts: int = 0
    main: list[tuple[str, str, bool]] = field(default_factory=list)  # (trial_id, choice, correct)
    error: str | None = None

    @property
    def accuracy(self) -> float | None:
        return float(np.mean([c for _, _, c in self.main])) if self.main else None


@dataclass
class SimulationResult:
    participants: list[SimParticipant]
    elapsed_s: float
    latencies_ms: list[float]
    retries: int

    def accuracy_by_condition(self, external_ids: set[str] | None = None) -> dict[str, dict]:
        """Main-trial accuracy pooled over responses (what the analysis computes), over all
        finished participants or those with the given external ids (e.g. the included)."""
        out: dict[str, dict] = {}
        for p in self.participants:
            if p.error or (external_ids is not None and p.external_id not in external_ids):
                continue
            row = out.setdefault(
                p.condition, {"n_participants": 0, "n_responses": 0, "n_correct": 0}
            )
            row["n_participants"] += 1
            row["n_responses"] += len(p.main)
            row["n_correct"] += sum(c for _, _, c in p.main)
        for row in out.values():
            row["accuracy"] = row["n_correct"] / row["n_responses"] if row["n_responses"] else None
        return out

    def to_json(self) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "n_participants": len(self.participants),
            "n_failed": sum(p.error is not None for p in self.participants),
            "errors": [p.error for p in self.participants if p.error][:10],
            "elapsed_s": round(self.elapsed_s, 3),
            "n_requests": len(self.latencies_ms),
            "requests_per_s": round(len(self.latencies_ms) / max(self.elapsed_s, 1e-9), 2),
            "latency_ms": {q: round(float(np.percentile(lat, p)), 2)
                           for q, p in (("p50", 50), ("p95", 95), ("p99", 99))},
            "retries": self.retries,
            "accuracy_by_condition": self.accuracy_by_condition(),
        }


class _Client:
    """httpx wrapper: JSON requests with retry + backoff, latency bookkeeping."""

    def __init__(self, client: httpx.AsyncClient, settings: SimSettings) -> None:
        self.client = client
        self.settings = settings
        self.latencies: list[float] = []
        self.retries = 0

    async def request(self, method: str, url: str, json: dict | None = None,
                      ok: tuple[int, ...] = (200, 201)) -> httpx.Response:
        """Retry transport errors and 5xx with exponential backoff (``max_retries``);
        a 429/503 with ``Retry-After`` waits as told, within ``max_wait_s`` in total."""
        s = self.settings
        last = ""
        attempt = 0
        waited = 0.0
        while True:
            t0 = time.perf_counter()
            delay = None
            try:
                resp = await self.client.request(method, url, json=json)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                self.latencies.append((time.perf_counter() - t0) * 1000.0)
                if resp.status_code in ok:
                    return resp
                if resp.status_code not in RETRY_STATUS:
                    detail = resp.text[:200]
                    raise CausalvisError(f"{method} {url}: HTTP {resp.status_code}: {detail}")
                last = f"HTTP {resp.status_code}"
                delay = _retry_after(resp)
            if delay is not None and waited + delay <= s.max_wait_s:
                waited += delay
            elif attempt < s.max_retries:
                delay = s.backoff_s * (2**attempt) * (1.0 + 0.25 * np.random.random())
                attempt += 1
            else:
                raise CausalvisError(
                    f"{method} {url}: gave up after {s.max_retries + 1} tries ({last})"
                )
            self.retries += 1
            await asyncio.sleep(delay)


def _retry_after(resp: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header of a 429/503 (plus jitter), else None."""
    if resp.status_code not in (429, 503):
        return None
    try:
        value = float(resp.headers.get("retry-after", ""))
    except ValueError:
        return None
    return max(0.0, value) * (1.0 + 0.25 * np.random.random())


async def _wait(settings: SimSettings, seconds: float) -> None:
    if settings.pace > 0:
        await asyncio.sleep(seconds * settings.pace)


async def _run_participant(
    api: _Client, base: str, strategy: Strategy, settings: SimSettings, index: int
) -> SimParticipant:
    s = settings
    rng = np.random.default_rng([s.seed, index])
    part = SimParticipant(index, f"{s.id_prefix}-{s.seed}-{index:05d}")

    def rt() -> int:
        value = rng.lognormal(np.log(s.rt_median_ms), s.rt_sigma)
        return int(np.clip(round(value), 200, 600_000))

    payloads: dict[str, dict] = {}

    async def answer(trial_id: str, attempt: int = 1) -> dict:
        choice, guessed = strategy.choose(trial_id, rng, s.lapse)
        confidence = 1 if guessed else int(rng.choice([2, 3]))
        rt_ms = rt()
        await _wait(s, rt_ms / 1000.0)
        trial = payloads[trial_id]
        left = trial["options"][int(rng.random() < 0.5)]["id"]  # the page shuffles sides
        body = {"trial_id": trial_id, "choice": strategy.option_id(trial, choice),
                "confidence": confidence, "rt_ms": rt_ms, "left_option": left,
                "attempt": attempt}  # fmt: skip
        resp = await api.request("POST", f"{base}/participants/{part.token}/responses", json=body)
        if strategy.kinds.get(trial_id) == "main":
            part.main.append((trial_id, choice, choice == strategy.truth.get(trial_id)))
        return resp.json()

    try:
        resp = await api.request("POST", f"{base}/participants",
                                 json={"platform": s.platform, "external_id": part.external_id})
        welcome = resp.json()
        part.token, part.condition = welcome["participant_token"], welcome["condition"]
        trials = welcome["trials"]
        payloads.update((t["trial_id"], t) for t in trials)
        await api.request("POST", f"{base}/participants/{part.token}/consent",
                          json={"consent": True})
        instr = float(rng.lognormal(np.log(s.instruction_median_s), 0.4))
        await _wait(s, instr)
        await api.request("POST", f"{base}/participants/{part.token}/instructions",
                          json={"instruction_time_s": round(instr, 3)})
        practice = [t["trial_id"] for t in trials if t.get("kind") == "practice"]
        passed = not practice
        while not passed:
            part.practice_attempts += 1
            if part.practice_attempts > s.max_practice_attempts:
                limit = s.max_practice_attempts
                raise CausalvisError(f"practice not passed after {limit} attempts")
            acks = [await answer(tid, part.practice_attempts) for tid in practice]
            passed = bool(acks[-1].get("practice_passed"))
        for t in trials:
            if t.get("kind") != "practice":
                await answer(t["trial_id"])
        done = await api.request("POST", f"{base}/participants/{part.token}/finish", json={})
        part.completion_code = done.json().get("completion_code")
    except (CausalvisError, KeyError, ValueError, httpx.HTTPError) as exc:
        part.error = f"participant {index}: {exc}"
    return part


async def simulate_async(
    url: str, strategy: Strategy, n_participants: int, settings: SimSettings,
    *, concurrency: int = 4, transport: httpx.AsyncBaseTransport | None = None,
) -> SimulationResult:
    """Run ``n_participants`` against ``url`` (server root), ``concurrency`` at a time."""
    if n_participants < 1:
        raise CausalvisError("--participants must be >= 1")
    if concurrency < 1:
        raise CausalvisError("--concurrency must be >= 1")
    base = url.rstrip("/") + "/api/v1"
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30.0, limits=limits, transport=transport) as client:
        api = _Client(client, settings)

        async def one(i: int) -> SimParticipant:
            async with sem:
                return await _run_participant(api, base, strategy, settings, i)

        t0 = time.perf_counter()
        parts = await asyncio.gather(*(one(i) for i in range(n_participants)))
        elapsed = time.perf_counter() - t0
    return SimulationResult(list(parts), elapsed, api.latencies, api.retries)


def simulate(url: str, strategy: Strategy, n_participants: int, settings: SimSettings,
             *, concurrency: int = 4) -> SimulationResult:
    return asyncio.run(simulate_async(url, strategy, n_participants, settings,
                                      concurrency=concurrency))


def build_strategy(study, name: str, *, device: str = "cpu") -> Strategy:
    """Strategy for a study folder: truth from trials.csv, observer decisions computed
    (or read from ``report/observer_trials.csv`` when it holds this observer)."""
    from pathlib import Path

    from causalvis.observers.registry import ALL_OBSERVERS, get_observer, load_task_trials
    from causalvis.observers.trials import read_trials
    from causalvis.store.layout import StudyPaths
    from causalvis.store.reports import read_observer_trials

    paths = StudyPaths(Path(study))
    frame = read_trials(paths.trials)
    truth = dict(zip(frame["trial_id"], frame["correct"], strict=True))
    kinds = dict(zip(frame["trial_id"], frame["kind"], strict=True))
    assets = {t: {"a": str(a).rsplit("/", 1)[-1], "b": str(b).rsplit("/", 1)[-1]}
              for t, a, b in zip(frame["trial_id"], frame["option_a_asset"],
                                 frame["option_b_asset"], strict=True)}  # fmt: skip
    if name in ("oracle", "random"):
        return Strategy(name, truth, kinds, assets=assets)
    if name not in ALL_OBSERVERS:
        raise CausalvisError(
            f"unknown strategy {name!r}: oracle, random or an observer ({', '.join(ALL_OBSERVERS)})"
        )
    table = read_observer_trials(paths)
    if table is not None:
        table = table[table["observer"] == name]
        # use the stored decisions only if they belong to this trials.csv (not stale)
        if len(table) and set(table["trial_id"]) <= set(truth):
            return Strategy(name, truth, kinds, dict(zip(table["trial_id"], table["choice"],
                                                         strict=True)), assets)
    from causalvis.config import StudyConfig
    from causalvis.observers.observe import decisions_frame
    from causalvis.observers.registry import make_observers
    from causalvis.observers.trials import AssetReader

    studied = StudyConfig.load(paths.config).model.name if paths.config.is_file() else "lite0"
    observers, _ = make_observers([name], studied_model=studied, device=device)
    trials = load_task_trials(get_observer(name).task, paths.trials)
    dec = decisions_frame(trials, AssetReader(paths.bundle), observers)
    return Strategy(name, truth, kinds, dict(zip(dec["trial_id"], dec["choice"], strict=True)),
                    assets)
