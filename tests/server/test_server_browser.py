"""A real participant in a real browser: Debian chromium driven by Playwright.

The device check first, consent, instructions with the worked example, fullscreen, a failed
and a passed practice round (reshuffled), all main and catch trials with a reload in the
middle, the feedback question and the completion page. Afterwards the database must hold
exactly one row per trial with what was clicked. The answer step: a double click stores one
answer, a click during the locked viewing time none; a too-small window is turned away
before anything is stored. Screenshots of every screen type go to test-artifacts/server/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from server_bundle_factory import ADMIN, make_study, truth

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "server"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]

pytestmark = pytest.mark.browser


# Fast answer step for tests not about it (the locked time still exists, but short).
FAST = {"min_view_ms": 150, "continue_after_ms": 350}


def set_experiment(study: Path, **values) -> None:
    """Rewrite the [experiment] section of the fixture's study.toml (the server reads it)."""
    from causalvis.config import StudyConfig

    cfg = StudyConfig.load(study / "study.toml")
    cfg.model_copy(
        update={"experiment": cfg.experiment.model_copy(update=values)}
    ).save(study / "study.toml")


def serve(study: Path):
    from causalvis.server.app import create_app, find_web_dist
    from causalvis.server.run import serve_in_thread

    if not CHROMIUM.is_file():
        pytest.skip("Debian chromium is not installed (make browser-deps installs it as root)")
    if find_web_dist() is None:
        pytest.skip("web/dist is not built (make setup runs npm install + npm run build)")
    app = create_app(study, admin_token=ADMIN)
    return app, serve_in_thread(app)


@pytest.fixture
def live_server(tmp_path):
    study = make_study(tmp_path / "study")
    set_experiment(study, **FAST)
    app, server = serve(study)
    with server as url:
        yield url, study, app


def _register(base: str, external_id: str) -> None:
    import httpx

    body = {"platform": "local", "external_id": external_id}
    assert httpx.post(f"{base}/api/v1/participants", json=body).status_code == 201


def _all_images_loaded(page, scope: str) -> int:
    images = page.locator(f"{scope} img")
    images.first.wait_for()
    for img in images.all():
        img.evaluate("i => i.complete || new Promise(r => i.addEventListener('load', r))")
        assert img.evaluate("i => i.naturalWidth > 0"), img.get_attribute("src")
    return images.count()


def option_labels(app, external_id: str, trial_id: str) -> dict[str, str]:
    """option id -> label (a/b) of one trial as the server shows it to this participant."""
    from sqlalchemy import select

    from causalvis.responses.db import Participant as P

    exp = app.state.experiment
    with exp.sessions() as db:
        session_id = db.scalar(select(P.session_id).where(P.external_id == external_id))
    return {oid: label for label, oid in exp.option_ids(session_id, trial_id).items()}


def assert_opaque_options(page) -> None:
    """No option label a/b in the DOM: every data-option is an opaque id."""
    values = page.eval_on_selector_all(
        "[data-option]", "els => els.map(e => e.getAttribute('data-option'))"
    )
    assert values and not {"a", "b"} & set(values), values
    assert all(re.fullmatch(r"o[0-9a-f]{6,}", v) for v in values), values


class Participant:
    """Clicks through the experiment, remembering what it answered (labels a/b, mapped
    from the opaque option ids through the server's own mapping)."""

    def __init__(self, page, rows: dict[str, dict], app, external_id: str):
        self.page = page
        self.rows = rows
        self.app = app
        self.external_id = external_id
        self.clicked: dict[str, dict] = {}  # main/catch trial id -> what was clicked
        self.practice: list[tuple[str, str, bool]] = []
        self.shots: set[str] = set()

    def option_for(self, tid: str, label: str) -> str:
        ids = {lab: oid for oid, lab in option_labels(self.app, self.external_id, tid).items()}
        return ids[label]

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        self.shots.add(name)

    def button(self, text: str) -> None:
        self.page.get_by_role("button", name=text, exact=True).click()

    def answer(
        self, *, right: bool, confidence: int, shot: str | None = None, cont: bool = True
    ) -> str:
        """Answer the trial on screen; then click Continue (main trials, `cont`)."""
        trial = self.page.locator(".cv-trial").first
        trial.wait_for()
        tid = trial.get_attribute("data-trial-id")
        truth_ = self.rows[tid]["correct"]
        option = truth_ if right else {"a": "b", "b": "a"}[truth_]
        assert_opaque_options(self.page)
        labels = option_labels(self.app, self.external_id, tid)
        left_id = self.page.locator('.cv-btn[data-side="left"]').first.get_attribute("data-option")
        n_images = _all_images_loaded(self.page, ".cv-trial")
        assert n_images == 3 + len(self.rows[tid]["reference_assets"].split()), tid
        if shot:
            self.shot(shot)
        self.page.locator(
            f'.cv-btn[data-option="{self.option_for(tid, option)}"][data-confidence="{confidence}"]'
        ).click()
        record = {"choice": option, "confidence": confidence, "left_option": labels[left_id]}
        if self.rows[tid]["kind"] == "practice":
            self.practice.append((tid, option, right))
        else:
            self.clicked[tid] = record
            if cont:
                self.button("Continue")
        return tid


def test_participant_flow_end_to_end(live_server):
    from playwright.sync_api import expect, sync_playwright
    from sqlalchemy import select

    from causalvis.responses.db import Participant as P
    from causalvis.responses.db import Response

    base, study, app = live_server
    rows = truth(study)
    url = f"{base}/?participant=lab-e2e"
    # Someone else takes the first (`none`) session: lab-e2e gets one with references.
    _register(base, "someone-else")
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.set_default_timeout(15000)
        who = Participant(page, rows, app, "lab-e2e")
        page.goto(url)

        expect(page.get_by_text("Consent to participate")).to_be_visible()
        who.shot("01-consent")
        page.click("#cv-consent-yes")
        expect(page.get_by_text("Computers recognise images")).to_be_visible()
        who.shot("02-instructions")
        page.click("#jspsych-instructions-next")
        expect(page.get_by_role("heading", name="Your task")).to_be_visible()
        page.click("#jspsych-instructions-next")
        expect(page.locator(".cv-example .cv-highlight")).to_have_count(1)
        _all_images_loaded(page, ".cv-example")
        example_srcs = page.eval_on_selector_all(
            ".cv-example .cv-query img, .cv-example .cv-option img",
            "els => els.map(e => e.getAttribute('src'))",
        )
        assert len(example_srcs) == 3
        assert_opaque_options(page)  # the example's figures carry opaque ids too
        who.shot("03-worked-example")
        page.click("#jspsych-instructions-next")
        page.click("#jspsych-instructions-next")
        expect(page.locator("#jspsych-fullscreen-btn")).to_be_visible()
        who.shot("04-fullscreen")
        page.click("#jspsych-fullscreen-btn")

        # practice round 1: one wrong answer -> repeat
        who.button("Start practice")
        who.answer(right=False, confidence=2, shot="05-practice-trial")
        expect(page.locator(".cv-fb-bad")).to_be_visible()
        who.shot("06-practice-feedback-wrong")
        who.button("Continue")
        who.answer(right=True, confidence=3)
        expect(page.locator(".cv-fb-ok")).to_be_visible()
        who.button("Continue")
        expect(page.get_by_text("1 of 2 correct")).to_be_visible()
        who.shot("07-practice-repeat")
        who.button("Continue")
        # practice round 2: all right
        expect(page.get_by_role("heading", name="Practice again")).to_be_visible()
        who.button("Start practice")
        for _ in range(2):
            who.answer(right=True, confidence=3)
            who.button("Continue")
        expect(page.get_by_role("heading", name="Well done")).to_be_visible()
        who.button("Continue")
        # the repeat shows the same drawn trials in a new order
        round1, round2 = [t for t, _, _ in who.practice[:2]], [t for t, _, _ in who.practice[2:]]
        assert sorted(round1) == sorted(round2) and round1 != round2, (round1, round2)

        expect(page.get_by_role("heading", name="Main part")).to_be_visible()
        who.button("Begin")
        first = who.answer(right=True, confidence=1, shot="08-main-trial")
        page.locator(f'.cv-trial[data-trial-id="{first}"]').wait_for(state="detached")
        expect(page.locator(".cv-trial")).to_be_visible()

        # connection drop + reload midway: the page resumes at the first unanswered trial
        page.reload()
        page.click("#jspsych-fullscreen-btn")  # the browser check and fullscreen come again
        expect(page.get_by_role("heading", name="Welcome back")).to_be_visible()
        who.shot("09-resume")
        who.button("Begin")
        # the connection drops twice while the next answer is sent: it is retried, not lost
        drops = {"left": 2, "posts": 0}

        def flaky(route):
            drops["posts"] += 1
            if drops["left"] > 0:
                drops["left"] -= 1
                return route.abort("internetdisconnected")
            return route.continue_()

        page.route("**/api/v1/participants/*/responses", flaky)
        seen_after_reload = [who.answer(right=True, confidence=2)]
        expect(page.locator(".cv-trial")).to_have_attribute(
            "data-trial-id", re.compile(r"^(?!" + re.escape(seen_after_reload[0]) + r"$)")
        )
        assert drops == {"left": 0, "posts": 3}
        page.unroute("**/api/v1/participants/*/responses")
        seen_after_reload.append(who.answer(right=False, confidence=2, shot="10-main-trial-2"))
        assert first not in seen_after_reload
        page.fill("#cv-feedback", "Clear instructions, thanks.")
        who.shot("11-feedback-question")
        page.click("#jspsych-survey-html-form-next")
        expect(page.locator("#cv-code")).to_be_visible()
        who.shot("12-completion")
        code = page.locator("#cv-code").inner_text().strip()
        # the admin dashboard (logged in with the token)
        admin = browser.new_page(viewport={"width": 1280, "height": 800})
        admin.goto(f"{base}/admin")
        admin.fill("#token", ADMIN)
        admin.click("#go")
        expect(admin.locator("#participants")).to_contain_text("lab-e2e")
        admin.screenshot(path=str(ARTIFACTS / "13-admin-dashboard.png"), full_page=True)
        # the smallest allowed window still shows the whole trial without scrolling
        _register(base, "someone-else-2")  # so that lab-small, too, sees references
        small = browser.new_page(viewport={"width": 940, "height": 600})
        small.goto(f"{base}/?participant=lab-small")
        small.click("#cv-consent-yes")
        for _ in range(4):
            small.click("#jspsych-instructions-next")
        small.click("#jspsych-fullscreen-btn")
        small.get_by_role("button", name="Start practice").click()
        small.locator(".cv-trial").wait_for()
        small.screenshot(path=str(ARTIFACTS / "14-trial-940x600.png"))
        box = small.locator(".cv-btn").last.bounding_box()
        assert box is not None and box["y"] + box["height"] <= 600
        assert small.locator(".cv-ref-grid img").count() == 9
        browser.close()

    assert not errors, errors
    with app.state.experiment.sessions() as db:
        p = db.scalar(select(P).where(P.external_id == "lab-e2e"))
        responses = list(db.scalars(select(Response).where(Response.participant_id == p.id)))
    assert p.status == "finished" and p.consent is True and p.completion_code == code
    assert p.feedback == "Clear instructions, thanks."
    assert p.instruction_time_s is not None and p.instruction_time_s > 0
    assert (p.window_width, p.window_height) == (1280, 800)
    session_trials = app.state.experiment.bundle.sessions[p.session_id].trials
    main = [r for r in responses if r.kind != "practice"]
    assert sorted(r.trial_id for r in main) == sorted(session_trials)  # exactly one row each
    assert {r.kind for r in main} == {"main", "catch"}
    assert p.condition == "natural"
    for r in main:
        want = who.clicked[r.trial_id]
        assert (r.choice, r.confidence, r.left_option) == (
            want["choice"],
            want["confidence"],
            want["left_option"],
        )
        assert r.correct == (rows[r.trial_id]["correct"] == r.choice)
        assert r.session_id == p.session_id and r.attempt == 1
        assert 0 < r.rt_ms < 120_000 and r.shown_at <= r.answered_at
    practice = sorted((r.attempt, r.trial_id, r.correct) for r in responses if r.kind == "practice")
    assert [a for a, _, _ in practice] == [1, 1, 2, 2]
    assert [c for a, _, c in practice if a == 1].count(False) == 1
    assert all(c for a, _, c in practice if a == 2)
    for name in ("01-consent", "03-worked-example", "05-practice-trial", "08-main-trial"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 5000
    # the worked example's images are shown in no scored or practice trial of the session
    exp = app.state.experiment
    shown: set[str] = set()
    for tid in tuple(exp.practice_for(p)) + tuple(session_trials):
        t = exp.bundle.trials[tid]
        shown |= {exp._asset(x) for x in (t.query, t.option_a, t.option_b) if x}
    assert not set(example_srcs) & shown, set(example_srcs) & shown


def test_platform_entry_screens(live_server):
    """Lab id entry, MTurk preview (no participant created), Prolific no-consent redirect."""
    from playwright.sync_api import expect, sync_playwright
    from sqlalchemy import func, select

    from causalvis.responses.db import Participant as P

    base, _study, app = live_server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(15000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

        page.goto(f"{base}/")
        pid = page.locator("#cv-pid")
        pid.fill("bad id!")  # the pattern compiles in Chrome's v-flag mode and rejects it
        assert pid.evaluate("e => e.validity.patternMismatch") is True
        pid.fill("LAB-042")
        assert pid.evaluate("e => e.validity.valid") is True
        page.screenshot(path=str(ARTIFACTS / "20-lab-id-entry.png"))
        page.click("#jspsych-survey-html-form-next")
        expect(page.locator("#cv-consent-yes")).to_be_visible()
        page.reload()  # the typed id is remembered: same participant, nothing asked again
        expect(page.locator("#cv-consent-yes")).to_be_visible()

        page.goto(f"{base}/?platform=mturk&assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=H1")
        expect(page.get_by_text("accept the HIT")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "21-mturk-preview.png"))

        landed: list[str] = []
        page.route(
            "https://app.prolific.com/**",
            lambda route: (landed.append(route.request.url), route.fulfill(body="prolific"))[1],
        )
        page.goto(f"{base}/?PROLIFIC_PID=PPX1&STUDY_ID=ST1&SESSION_ID=SE1")
        page.click("#cv-consent-no")
        expect(page.locator("#cv-code")).to_have_text("N0CONSENT")
        page.screenshot(path=str(ARTIFACTS / "22-prolific-no-consent.png"))
        expect(page.locator("#cv-return")).to_have_attribute("href", re.compile("cc=N0CONSENT$"))
        page.wait_for_url("https://app.prolific.com/**", timeout=10000)
        assert landed == ["https://app.prolific.com/submissions/complete?cc=N0CONSENT"]
        # a lab participant who declines sees no completion code, and what to do
        page.goto(f"{base}/?participant=lab-declines")
        page.click("#cv-consent-no")
        expect(page.get_by_text("You chose not to take part")).to_be_visible()
        expect(page.get_by_text("tell the experimenter")).to_be_visible()
        assert page.locator("#cv-code").count() == 0
        page.screenshot(path=str(ARTIFACTS / "25-lab-no-consent.png"))
        browser.close()
    with app.state.experiment.sessions() as db:
        people = {p.external_id: p for p in db.scalars(select(P))}
        assert db.scalar(select(func.count()).select_from(P)) == 3  # the MTurk preview: none
    assert people["LAB-042"].platform == "local" and people["LAB-042"].consent is None
    prolific = people["PPX1"]
    assert (prolific.status, prolific.consent, prolific.platform_study_id) == (
        "declined",
        False,
        "ST1",
    )
    assert prolific.platform_session_id == "SE1"


def test_lab_id_resumes_only_in_its_browser_and_a_full_study_says_so(live_server):
    """The resume secret lives in the browser's localStorage: a reload resumes, another
    browser with the same typed id is refused; past the plan the page says the study is full."""
    from playwright.sync_api import expect, sync_playwright

    base, _study, app = live_server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(15000)
        page.goto(f"{base}/?participant=P017")
        page.click("#cv-consent-yes")
        expect(page.get_by_text("Computers recognise images")).to_be_visible()
        page.reload()  # same browser: resumes after consent
        expect(page.get_by_text("Computers recognise images")).to_be_visible()
        other = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        other.set_default_timeout(15000)
        other.goto(f"{base}/?participant=P017")
        expect(other.get_by_text("already in use")).to_be_visible()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        other.screenshot(path=str(ARTIFACTS / "23-lab-id-taken.png"))
        for i in range(3):  # the plan has four places
            _register(base, f"filler-{i}")
        other.goto(f"{base}/?participant=late-1")
        expect(other.get_by_role("heading", name="This study is full")).to_be_visible()
        other.screenshot(path=str(ARTIFACTS / "24-study-full.png"))
        browser.close()
    assert app.state.experiment.refused_full == 1


def _count_responses(app, external_id: str) -> int:
    from sqlalchemy import func, select

    from causalvis.responses.db import Participant as P
    from causalvis.responses.db import Response

    with app.state.experiment.sessions() as db:
        return db.scalar(
            select(func.count()).select_from(Response).join(P, Response.participant_id == P.id)
            .where(P.external_id == external_id, Response.kind != "practice")
        )  # fmt: skip


@pytest.fixture
def live_locked(tmp_path):
    """A study whose trials lock their buttons for 1.5 s (IMI's min_view_ms)."""
    study = make_study(tmp_path / "study")
    set_experiment(study, min_view_ms=1500, continue_after_ms=350)
    app, server = serve(study)
    with server as url:
        yield url, study, app


def test_answer_step_locks_and_takes_one_answer_per_click(live_locked):
    """A click during the locked viewing time stores nothing; a double click stores exactly
    one answer; a click right after Continue lands on the next trial's locked buttons."""
    from playwright.sync_api import expect, sync_playwright

    base, study, app = live_locked
    rows = truth(study)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(15000)
        who = Participant(page, rows, app, "lab-lock")
        page.goto(f"{base}/?participant=lab-lock")
        page.click("#cv-consent-yes")
        for _ in range(4):
            page.click("#jspsych-instructions-next")
        page.click("#jspsych-fullscreen-btn")
        who.button("Start practice")
        for _ in range(2):
            who.answer(right=True, confidence=3)
            who.button("Continue")
        who.button("Continue")  # "Well done"
        who.button("Begin")
        trial = page.locator(".cv-trial").first
        trial.wait_for()
        tid = trial.get_attribute("data-trial-id")
        btn = page.locator('.cv-btn[data-confidence="3"]').first
        box = btn.bounding_box()
        assert btn.is_disabled()
        expect(page.locator(".cv-viewhint")).to_be_visible()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "30-locked-viewing-time.png"))
        centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.click(*centre)  # too early: the button is locked
        page.mouse.dblclick(*centre)
        page.wait_for_timeout(300)
        assert _count_responses(app, "lab-lock") == 0
        assert page.locator(".cv-selected").count() == 0
        expect(btn).to_be_enabled(timeout=3000)
        btn.dblclick()  # a double click: one answer
        expect(page.get_by_role("button", name="Continue")).to_be_visible()
        assert page.locator(".cv-option.cv-chosen").count() == 1
        assert page.locator(".cv-btn:enabled").count() == 0
        page.screenshot(path=str(ARTIFACTS / "31-answered-continue.png"))
        assert _count_responses(app, "lab-lock") == 1
        # Continue, then at once a click where the answer buttons are: the next trial's
        # buttons are locked, nothing is stored
        who.button("Continue")
        page.locator(f'.cv-trial:not([data-trial-id="{tid}"])').wait_for()
        page.mouse.click(*centre)
        page.wait_for_timeout(300)
        assert _count_responses(app, "lab-lock") == 1
        browser.close()
    with app.state.experiment.sessions() as db:
        from sqlalchemy import select

        from causalvis.responses.db import Participant as P
        from causalvis.responses.db import Response

        p = db.scalar(select(P).where(P.external_id == "lab-lock"))
        stored = [r for r in db.scalars(select(Response).where(Response.participant_id == p.id))
                  if r.kind != "practice"]  # fmt: skip
    assert [r.trial_id for r in stored] == [tid]
    assert stored[0].rt_ms >= 1500  # answered after the locked time


def test_device_check_comes_first_and_takes_no_place(live_server):
    """An 800 x 500 window: the size check is the first screen (no consent, nothing stored
    beyond a screened-out mark), the platform's answer follows, and no session place is held."""
    import httpx
    from playwright.sync_api import expect, sync_playwright
    from sqlalchemy import select

    from causalvis.responses.db import Participant as P

    base, _study, app = live_server
    links = {
        "prolific": "/?PROLIFIC_PID=PSMALL&STUDY_ID=ST1&SESSION_ID=SE1",
        "mturk": "/?platform=mturk&assignmentId=AS1&workerId=WSMALL&hitId=H1",
        "local": "/?participant=lab-small-window",
    }
    said = {"prolific": "Prolific", "mturk": "return the HIT", "local": "tell the experimenter"}
    posts: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for platform, link in links.items():
            page = browser.new_page(viewport={"width": 800, "height": 500})
            page.set_default_timeout(15000)
            page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
            page.goto(base + link)
            expect(page.get_by_role("heading", name="Your window is too small")).to_be_visible()
            assert page.locator("#cv-consent-yes").count() == 0
            page.screenshot(path=str(ARTIFACTS / f"40-window-too-small-{platform}.png"))
            page.get_by_role("button", name="I cannot make the window larger").click()
            expect(page.locator("#cv-screened-out")).to_be_visible()
            expect(page.locator("#cv-screened-out")).to_contain_text(said[platform])
            page.screenshot(path=str(ARTIFACTS / f"41-screened-out-{platform}.png"))
            page.close()
        browser.close()
    assert all(u.endswith("/api/v1/screened_out") for u in posts), posts
    assert len(posts) == 3
    with app.state.experiment.sessions() as db:
        statuses = [p.status for p in db.scalars(select(P))]
    assert set(statuses) <= {"screened_out"}, statuses
    # every one of the plan's four places is still free
    for i in range(4):
        body = {"platform": "local", "external_id": f"after-{i}"}
        assert httpx.post(f"{base}/api/v1/participants", json=body).status_code == 201


def test_second_tab_is_told_the_study_is_open_elsewhere(live_server):
    """Two tabs of one participant: the older one, answering, is stopped with a message."""
    from playwright.sync_api import expect, sync_playwright

    base, _study, app = live_server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        first = ctx.new_page()
        first.set_default_timeout(15000)
        first.goto(f"{base}/?participant=lab-tabs")
        expect(first.locator("#cv-consent-yes")).to_be_visible()
        second = ctx.new_page()
        second.set_default_timeout(15000)
        second.goto(f"{base}/?participant=lab-tabs")
        expect(second.locator("#cv-consent-yes")).to_be_visible()
        first.click("#cv-consent-yes")
        expect(first.get_by_text("open in another tab or window; please continue there")).to_be_visible()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        first.screenshot(path=str(ARTIFACTS / "42-open-elsewhere.png"))
        second.click("#cv-consent-yes")  # the newest tab goes on
        expect(second.get_by_text("Computers recognise images")).to_be_visible()
        browser.close()


@pytest.mark.parametrize("mode", ["data-only", "visual"])
def test_simulated_participant_runs_through_the_real_front_end(live_server, mode):
    """jsPsych's simulation mode (`?simulate=`) drives the custom plugins' simulate(): the
    simulated participant practises until all correct and answers every trial once."""
    from playwright.sync_api import sync_playwright
    from sqlalchemy import select

    from causalvis.responses.db import Participant as P
    from causalvis.responses.db import Response

    base, _study, app = live_server
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/?participant=sim-{mode}&simulate={mode}")
        page.locator("#cv-code").wait_for(timeout=150_000)
        browser.close()
    assert not errors, errors
    with app.state.experiment.sessions() as db:
        p = db.scalar(select(P).where(P.external_id == f"sim-{mode}"))
        responses = list(db.scalars(select(Response).where(Response.participant_id == p.id)))
    assert p.status == "finished" and p.consent is True
    main = sorted(r.trial_id for r in responses if r.kind != "practice")
    assert main == sorted(app.state.experiment.bundle.sessions[p.session_id].trials)
    last = max(r.attempt for r in responses if r.kind == "practice")
    assert all(r.correct for r in responses if r.kind == "practice" and r.attempt == last)
