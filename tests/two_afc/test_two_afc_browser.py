"""A real participant of the 2-AFC task in a real browser (Debian chromium + Playwright).

Consent, instructions with the worked example, practice with a wrong answer first (feedback,
repeat in a new order), every main and catch trial with the running score, the feedback
question and the completion page. Checks the layout (minimal references left, maximal right,
the queries in between; the smallest allowed window still fits), the answer step (a click
in the locked viewing time stores nothing, a double click one answer), that the worked
example's images are in no trial of the session, and that the database holds what was
clicked. Screenshots go to test-artifacts/two_afc/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from server_bundle_factory import ADMIN, make_study, truth  # noqa: E402
from test_server_browser import (  # noqa: E402
    CHROMIUM,
    FLAGS,
    _all_images_loaded,
    _count_responses,
    assert_opaque_options,
    option_labels,
    set_experiment,
)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "two_afc"

pytestmark = pytest.mark.browser


@pytest.fixture
def live_two_afc(tmp_path):
    from causalvis.server.app import create_app, find_web_dist
    from causalvis.server.run import serve_in_thread

    if not CHROMIUM.is_file():
        pytest.skip("Debian chromium is not installed (make browser-deps installs it as root)")
    if find_web_dist() is None:
        pytest.skip("web/dist is not built (make setup runs npm install + npm run build)")
    study = make_study(tmp_path / "study", task="two_afc", correct_counter=True)
    set_experiment(study, min_view_ms=1000, continue_after_ms=350)  # long enough to click in
    app = create_app(study, admin_token=ADMIN)
    with serve_in_thread(app) as url:
        yield url, study, app


def _check_layout(page, row: dict) -> None:
    """Minimal references in the left column, maximal in the right, queries in between."""
    want_min = ["/" + x for x in row["min_reference_assets"].split()]
    want_max = ["/" + x for x in row["reference_assets"].split()]
    mins = page.locator(".cv-refs-min .cv-ref-grid img")
    maxs = page.locator(".cv-refs-max .cv-ref-grid img")
    assert [i.get_attribute("src") for i in mins.all()] == want_min
    assert [i.get_attribute("src") for i in maxs.all()] == want_max
    assert "Minimally activating" in page.locator(".cv-refs-min h3").inner_text()
    assert "Maximally activating" in page.locator(".cv-refs-max h3").inner_text()
    queries = [q.bounding_box() for q in page.locator(".cv-afc-query img").all()]
    assert len(queries) == 2
    q_left = min(q["x"] for q in queries)
    q_right = max(q["x"] + q["width"] for q in queries)
    for img in mins.all():
        box = img.bounding_box()
        assert box["x"] + box["width"] < q_left, box
    for img in maxs.all():
        assert img.bounding_box()["x"] > q_right
    top, bottom = sorted(queries, key=lambda q: q["y"])
    assert top["y"] + top["height"] <= bottom["y"]  # one above the other


class Participant:
    """Clicks through the 2-AFC experiment, remembering what it answered."""

    def __init__(self, page, rows: dict[str, dict], app, external_id: str):
        self.page = page
        self.rows = rows
        self.app = app
        self.external_id = external_id
        self.clicked: dict[str, dict] = {}
        self.practice: list[tuple[str, bool]] = []

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def button(self, text: str) -> None:
        self.page.get_by_role("button", name=text, exact=True).click()

    def answer(
        self, *, right: bool, confidence: int, shot: str | None = None, cont: bool = True,
        click: str = "click",
    ) -> str:
        """Answer the trial on screen (`click` or `dblclick`); then Continue (main trials)."""
        trial = self.page.locator(".cv-trial").first
        trial.wait_for()
        tid = trial.get_attribute("data-trial-id")
        row = self.rows[tid]
        option = row["correct"] if right else {"a": "b", "b": "a"}[row["correct"]]
        assert_opaque_options(self.page)
        labels = option_labels(self.app, self.external_id, tid)
        ids = {lab: oid for oid, lab in labels.items()}
        top_id = self.page.locator('.cv-btn[data-side="left"]').first.get_attribute("data-option")
        top = labels[top_id]
        n_refs = len(row["reference_assets"].split()) + len(row["min_reference_assets"].split())
        assert _all_images_loaded(self.page, ".cv-trial") == 2 + n_refs, tid
        _check_layout(self.page, row)
        if shot:
            self.shot(shot)
        btn = self.page.locator(
            f'.cv-btn[data-option="{ids[option]}"][data-confidence="{confidence}"]'
        )
        getattr(btn, click)()
        if row["kind"] == "practice":
            self.practice.append((tid, right))
        else:
            self.clicked[tid] = {"choice": option, "confidence": confidence, "left_option": top}
            if cont:
                self.button("Continue")
        return tid


def test_two_afc_participant_end_to_end(live_two_afc):
    from playwright.sync_api import expect, sync_playwright
    from sqlalchemy import select

    from causalvis.responses.db import Participant as P
    from causalvis.responses.db import Response

    base, study, app = live_two_afc
    rows = truth(study)
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.set_default_timeout(15000)
        who = Participant(page, rows, app, "lab-afc")
        page.goto(f"{base}/?participant=lab-afc")

        page.click("#cv-consent-yes")
        expect(page.get_by_text("which of two images makes one unit respond")).to_be_visible()
        page.click("#jspsych-instructions-next")
        expect(page.get_by_text("belongs to the right side")).to_be_visible()
        page.click("#jspsych-instructions-next")
        expect(page.locator(".cv-example .cv-highlight")).to_have_count(1)
        _all_images_loaded(page, ".cv-example")
        assert page.locator(".cv-example .cv-refs-min img").count() == 9
        assert page.locator(".cv-example .cv-btn").count() == 0
        example_srcs = page.eval_on_selector_all(
            ".cv-example .cv-afc-query img", "els => els.map(e => e.getAttribute('src'))"
        )
        assert len(example_srcs) == 2
        assert_opaque_options(page)
        who.shot("01-worked-example")
        page.click("#jspsych-instructions-next")
        expect(page.get_by_text("A counter above each question")).to_be_visible()
        page.click("#jspsych-instructions-next")
        page.click("#jspsych-fullscreen-btn")

        # practice round 1: a wrong answer first -> feedback -> the round repeats
        who.button("Start practice")
        who.answer(right=False, confidence=2)
        expect(page.locator(".cv-fb-bad")).to_contain_text("marked in green")
        expect(page.locator(".cv-afc-query.cv-highlight")).to_have_count(1)
        framed = page.locator(".cv-afc-query.cv-highlight").get_attribute("data-option")
        labels = option_labels(app, "lab-afc", who.practice[-1][0])
        assert labels[framed] == rows[who.practice[-1][0]]["correct"]
        who.shot("02-practice-wrong")
        who.button("Continue")
        who.answer(right=True, confidence=3)
        expect(page.locator(".cv-fb-ok")).to_be_visible()
        who.button("Continue")
        expect(page.get_by_text("1 of 2 correct")).to_be_visible()
        who.button("Continue")
        expect(page.get_by_role("heading", name="Practice again")).to_be_visible()
        who.button("Start practice")
        for _ in range(2):
            who.answer(right=True, confidence=3)
            who.button("Continue")
        expect(page.get_by_role("heading", name="Well done")).to_be_visible()
        who.button("Continue")
        round1, round2 = [t for t, _ in who.practice[:2]], [t for t, _ in who.practice[2:]]
        assert sorted(round1) == sorted(round2) and round1 != round2, (round1, round2)

        # main part: first answer wrong, the rest right; the score follows the answers
        who.button("Begin")
        # a click while the buttons are locked stores nothing
        locked = page.locator(".cv-btn").first
        locked.wait_for()
        assert locked.is_disabled()
        box = locked.bounding_box()
        page.mouse.dblclick(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_timeout(200)
        assert _count_responses(app, "lab-afc") == 0
        n_main = len(app.state.experiment.bundle.sessions[
            next(iter(app.state.experiment.bundle.sessions))].trials)  # fmt: skip
        expect(page.locator(".cv-counter")).to_have_text(f"Question 1 of {n_main}")
        first = who.answer(right=False, confidence=1, click="dblclick", cont=False)
        expect(page.get_by_role("button", name="Continue")).to_be_visible()
        assert _count_responses(app, "lab-afc") == 1  # a double click: one answer
        who.button("Continue")
        page.locator(f'.cv-trial[data-trial-id="{first}"]').wait_for(state="detached")
        expect(page.locator(".cv-score")).to_have_text("Correct so far: 0 of 1")
        who.answer(right=True, confidence=3, shot="03-main-trial")
        expect(page.locator(".cv-score")).to_have_text("Correct so far: 1 of 2")
        # the smallest allowed window still shows the whole trial without scrolling
        page.set_viewport_size({"width": 940, "height": 600})
        page.screenshot(path=str(ARTIFACTS / "04-main-trial-940x600.png"))
        for sel in (".cv-btn", ".cv-refs-max"):
            box = page.locator(sel).last.bounding_box()
            assert box["y"] + box["height"] <= 600 and box["x"] + box["width"] <= 940, sel
        who.answer(right=True, confidence=2)
        page.fill("#cv-feedback", "Fine.")
        page.click("#jspsych-survey-html-form-next")
        expect(page.locator("#cv-code")).to_be_visible()
        code = page.locator("#cv-code").inner_text().strip()
        browser.close()

    assert not errors, errors
    with app.state.experiment.sessions() as db:
        p = db.scalar(select(P).where(P.external_id == "lab-afc"))
        responses = list(db.scalars(select(Response).where(Response.participant_id == p.id)))
    assert p.status == "finished" and p.completion_code == code
    session_trials = app.state.experiment.bundle.sessions[p.session_id].trials
    main = [r for r in responses if r.kind != "practice"]
    assert sorted(r.trial_id for r in main) == sorted(session_trials) == sorted(who.clicked)
    assert {r.kind for r in main} == {"main", "catch"}
    for r in main:
        want = who.clicked[r.trial_id]
        assert (r.choice, r.confidence, r.left_option) == (
            want["choice"], want["confidence"], want["left_option"])  # fmt: skip
        assert r.correct == (rows[r.trial_id]["correct"] == r.choice)
    assert sum(r.correct for r in main) == n_main - 1
    practice = sorted((r.attempt, r.trial_id, r.correct) for r in responses if r.kind == "practice")
    assert [a for a, _, _ in practice] == [1, 1, 2, 2]
    assert sorted(c for a, _, c in practice if a == 1) == [False, True]  # order: random
    assert all(c for a, _, c in practice if a == 2)
    exp = app.state.experiment
    shown: set[str] = set()
    for tid in tuple(exp.practice_for(p)) + tuple(session_trials):
        t = exp.bundle.trials[tid]
        shown |= {exp._asset(x) for x in (t.query, t.option_a, t.option_b) if x}
    assert not set(example_srcs) & shown, set(example_srcs) & shown
