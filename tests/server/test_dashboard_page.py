"""The dashboard page in a real browser at 1280×800: the participant table stays inside
the window (long ids, several flags), screened-out people are shown as such and fast
answers get a badge. Data are seeded in the database directly."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from server_bundle_factory import ADMIN, make_study

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "server"

pytestmark = pytest.mark.browser


def _seed(study: Path) -> None:
    from causalvis.responses.db import Participant, Response, default_url, open_database
    from causalvis.server.bundle import load_bundle

    bundle = load_bundle(study)
    session = next(iter(bundle.sessions.values()))
    engine, factory = open_database(default_url(study))
    from causalvis.responses.db import utcnow

    now = utcnow()
    with factory() as db:
        long_id = "PROLIFIC-" + "x" * 60
        p = Participant(token="tok-long", platform="prolific", external_id=long_id, session_id=session.session_id,
                        condition=session.condition, status="finished", created_at=now,
                        consented_at=now - timedelta(seconds=30), finished_at=now,
                        last_seen_at=now, instruction_time_s=1.0,
                        feedback="a long comment " * 20)
        s = Participant(token="tok-screened", platform="prolific", external_id="screened-" + "y" * 40,
                        session_id=session.session_id, condition=session.condition,
                        status="screened_out", created_at=now, last_seen_at=now)
        db.add_all([p, s])
        db.flush()
        for i, tid in enumerate(session.trials):
            t = bundle.trials[tid]
            db.add(Response(participant_id=p.id, session_id=session.session_id, trial_id=tid,
                            kind=t.kind, choice="a",
                            left_option="a", correct=t.correct == "a", confidence=1,
                            rt_ms=120 + i, attempt=1, received_at=now))
        db.commit()
    engine.dispose()


def test_dashboard_fits_1280_and_shows_flags(tmp_path):
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    from causalvis.server.app import create_app
    from causalvis.server.run import serve_in_thread

    if not CHROMIUM.is_file():
        pytest.skip("Debian chromium is not installed")
    study = make_study(tmp_path / "study")
    app = create_app(study, admin_token=ADMIN)
    _seed(study)
    with serve_in_thread(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{base}/admin")
        page.fill("#token", ADMIN)
        page.click("#go")
        page.locator("#participants").get_by_text("screened out").wait_for()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-1280.png"), full_page=True)
        width = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        table = page.locator("#participants").inner_text()
        cards = page.locator("#cards").inner_text()
        browser.close()
    assert width[0] <= width[1], width
    assert "screened out" in table and "screened_out" not in table
    assert "SCREENED OUT" in cards.upper()
    # flags of the long-id participant: several exclusions (red) and the fast-answer badge
    assert "missing_steps" in table or "instruction_time" in table
    assert "fast ×" in table or "fast_answers" in table
