// The participant's flow: device check (window size, desktop, browser; before anything is
// stored) -> identify (Prolific / MTurk / lab id) -> consent -> instructions with a worked
// example -> fullscreen -> practice with feedback until all correct (reshuffled on every
// repeat) -> main and catch trials with a progress bar -> optional feedback -> completion.
// Texts come from the study (settings.texts, GET /api/v1/config before a participant
// exists). Every POST carries this page load's `tab_id`: a second tab of the same
// participant is told the study is open elsewhere. `?simulate=data-only|visual` runs
// jsPsych's simulation mode through the real flow (simulated participants in tests).
// Two tasks share this flow: causal occlusion (plugin-causal-occlusion.js) and the 2-AFC
// task of minimal vs maximal references (plugin-two-afc.js); the server says which.
// Every answer is POSTed the moment it is given; a reload resumes at the first unanswered
// trial because the server knows what was answered.
"use strict";

(async function main() {
  // Relative: the study may be served under a path prefix (serve --root-path /study1).
  const API = "api/v1";
  const params = new URLSearchParams(window.location.search);
  const MTURK_PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE";
  const esc = causalvisTrialResponse.esc;

  function stage() {
    const el = document.createElement("div");
    el.className = "cv-stage";
    document.body.append(el);
    return el;
  }

  function page(html) {
    document.querySelectorAll(".cv-stage").forEach((e) => e.remove());
    const el = stage();
    el.innerHTML = `<div class="cv-page">${html}</div>`;
    return el;
  }

  // -- who is this? ---------------------------------------------------------------------
  function identify() {
    if (params.get("PROLIFIC_PID")) {
      return { platform: "prolific", external_id: params.get("PROLIFIC_PID"),
               study_id: params.get("STUDY_ID") || undefined, session_id: params.get("SESSION_ID") || undefined };
    }
    if (params.get("platform") === "mturk" || params.has("assignmentId")) {
      const assignment = params.get("assignmentId");
      if (!assignment || assignment === MTURK_PREVIEW || !params.get("workerId")) return { platform: "mturk", preview: true };
      return { platform: "mturk", external_id: params.get("workerId"), assignment_id: assignment,
               hit_id: params.get("hitId") || undefined, turk_submit_to: params.get("turkSubmitTo") || undefined };
    }
    const id = params.get("participant") || sessionStorage.getItem("causalvis-local-id");
    return { platform: "local", external_id: id || null };
  }

  // One id per page load: the server remembers the latest tab of a participant.
  const randomHex = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0")).join("");
  const tabId = randomHex(12);
  const simulateMode = ["data-only", "visual"].includes(params.get("simulate")) ? params.get("simulate") : null;

  const openElsewhere = () => {
    document.body.classList.remove("cv-show-progress");
    page(`<h1 class="cv-title">The study is open in another tab or window</h1>
      <p class="cv-lead">The study is open in another tab or window; please continue there.</p>
      <p class="cv-note">You can close this tab.</p>`);
    return new Promise(() => {}); // stop here: nothing more is sent from this tab
  };
  /** POST with this tab's id; a 409 "open_elsewhere" stops this tab. */
  async function send(path, body) {
    try {
      return await CausalvisApi.post(path, { ...body, tab_id: tabId });
    } catch (err) {
      if (err.status === 409 && err.data && err.data.open_elsewhere) return openElsewhere();
      throw err;
    }
  }

  async function askLocalId(error) {
    const el = stage();
    const jsPsych = initJsPsych({ display_element: el });
    let id = null;
    await jsPsych.run([{
      type: jsPsychSurveyHtmlForm,
      preamble: `<h1 class="cv-title">${esc(title)}</h1><p class="cv-lead">Please enter the participant ID you were given by the experimenter.</p>
        ${error ? `<p class="cv-fb cv-fb-bad" id="cv-pid-error">${esc(error)}</p>` : ""}`,
      // Chrome compiles `pattern` in the regex v-flag mode: a literal hyphen in a class must be escaped.
      html: `<p><label>Participant ID<br><input name="pid" id="cv-pid" required pattern="[A-Za-z0-9_.:@\\-]+" maxlength="128" autocomplete="off" autofocus
        title="Letters, digits and _ . : @ - only"></label></p><p class="cv-note">Letters, digits and <code>_ . : @ -</code> only.</p>`,
      button_label: "Start",
      on_finish: (data) => { id = data.response.pid.trim(); },
    }]);
    el.remove();
    try { sessionStorage.setItem("causalvis-local-id", id); } catch (e) { /* private mode */ }
    return id;
  }

  function mturkPreview() {
    page(`<h1 class="cv-title">${esc(title)} (preview)</h1>
      <p class="cv-lead">In this HIT you look at images and ${config.task === "two_afc"
        ? "decide which of two images belongs with a set of example images"
        : "decide which of two partly covered copies of an image a part of an artificial neural network still responds to more strongly"}.</p>
      <ul class="cv-list"><li>It takes ${causalvisTexts.duration(config.texts || config)}; a short practice with feedback comes first.</li>
      <li>A desktop or laptop computer with a window of at least ${minW} × ${minH} pixels is required.</li>
      <li>You can take part only once.</li></ul>
      <p class="cv-note">Please <strong>accept the HIT</strong> to begin.</p>`);
  }

  // -- what the study says before anyone is stored ----------------------------------------
  let config = {};
  try {
    config = (await CausalvisApi.get(`${API}/config`)).data || {};
  } catch (err) {
    config = {}; // an older server: defaults below
  }
  const exp0 = config.experiment || {};
  const minW = exp0.min_width || 940;
  const minH = exp0.min_height || 600;
  const title = (config.texts && config.texts.title) || config.title || "Image study";
  document.title = title;

  // -- who is this? ---------------------------------------------------------------------
  const who = identify();
  if (who.preview) return mturkPreview();

  // -- device check FIRST: nothing is stored and no session place is taken before it ----
  async function deviceCheck() {
    const el = stage();
    const jsPsych = initJsPsych({ display_element: el });
    let data = null;
    await jsPsych.run([{
      type: jsPsychBrowserCheck,
      features: ["width", "height", "browser", "browser_version", "mobile", "os"],
      minimum_width: minW,
      minimum_height: minH,
      window_resize_message: `<div class="cv-page cv-text"><h1 class="cv-title">Your window is too small</h1>
        <p>This study needs a window of at least <span id="browser-check-min-width"></span> × <span id="browser-check-min-height"></span> pixels.
        Please enlarge the browser window (or zoom out with Ctrl and −).</p>
        <p>It is now <span id="browser-check-actual-width"></span> × <span id="browser-check-actual-height"></span>.</p></div>`,
      resize_fail_button_text: "I cannot make the window larger",
      inclusion_function: () => true, // decided below, so that the server hears why
      on_finish: (d) => { data = d; },
    }]);
    el.remove();
    if (data.mobile) return "mobile";
    if (window.innerWidth < minW || window.innerHeight < minH) return "small_window";
    if (data.browser === "ie" || typeof fetch !== "function" || !window.crypto) return "browser";
    return null;
  }

  async function screenedOut(reason) {
    const { preview, hit_id, turk_submit_to, ...ids } = who;
    let r = {};
    try {
      r = (await CausalvisApi.post(`${API}/screened_out`, { ...ids, reason })).data || {};
    } catch (err) {
      r = {};
    }
    const why = {
      mobile: "This study needs a desktop or laptop computer; it cannot be done on a phone or tablet.",
      small_window: `This study needs a browser window of at least ${minW} × ${minH} pixels, which this screen cannot show.`,
      browser: "This study needs a current version of Chrome, Firefox, Edge or Safari.",
    }[reason];
    let action = "";
    if (who.platform === "prolific") {
      action = (r.completion_code ? `<p>Your code for Prolific</p><p class="cv-code" id="cv-code">${esc(r.completion_code)}</p>` : "")
        + (r.redirect_url
          ? `<p><a class="jspsych-btn cv-primary" id="cv-return" href="${esc(r.redirect_url)}">Return to Prolific</a></p>`
          : `<p>Please return your submission on Prolific${r.completion_code ? " and enter the code above" : ""}.</p>`);
    } else if (who.platform === "mturk" || r.mturk_return) {
      action = `<p><strong>Please return the HIT</strong> (click “Return” on MTurk) so that it does not count against you.</p>`;
    } else {
      action = "<p>Please tell the experimenter.</p>";
    }
    // The server's own message says the same as `action`; the page words it per platform.
    page(`<div id="cv-screened-out"><h1 class="cv-title">This device cannot be used for the study</h1>
      <p class="cv-lead">${why}</p><p>No answers or personal data were stored; only that a visit was turned away. Thank you for your interest.</p>${action}</div>`);
  }

  const reason = await deviceCheck();
  if (reason) return screenedOut(reason);
  if (!who.external_id) who.external_id = await askLocalId();

  const { preview, ...body } = who;
  // The server hands out a resume secret at creation; only this browser can resume with it.
  const secretKey = `causalvis-resume:${body.platform}:${body.external_id}`;
  // Made before the first POST so that a retried creation (its 201 lost) resumes too.
  const freshSecret = () => randomHex(18);
  let storedSecret = null;
  try {
    storedSecret = localStorage.getItem(secretKey);
    if (!storedSecret) { storedSecret = freshSecret(); localStorage.setItem(secretKey, storedSecret); }
  } catch (e) { storedSecret = storedSecret || freshSecret(); /* private mode: no resume after a reload */ }
  body.resume_secret = storedSecret;
  let welcome;
  try {
    welcome = (await send(`${API}/participants`, body)).data;
  } catch (err) {
    const data = err.data || {};
    if (err.status === 409 && data.study_full) {
      const back = data.redirect_url
        ? `<p><a class="jspsych-btn cv-primary" id="cv-return" href="${esc(data.redirect_url)}">Return to Prolific</a></p>`
        : "";
      return page(`<h1 class="cv-title">This study is full</h1><p class="cv-lead">Every place has been taken. Thank you for your interest.</p>${back}`);
    }
    if (err.status === 409 && String(err.detail).startsWith("this participant has already taken part")) {
      return page(`<h1 class="cv-title">Thank you</h1><p class="cv-lead">You have already taken part in this study. It can be done only once.</p>`);
    }
    if (err.status === 422 && body.platform === "local" && !params.get("participant")) {
      try { sessionStorage.removeItem("causalvis-local-id"); } catch (e) { /* private mode */ }
      page(`<h1 class="cv-title">This participant ID cannot be used</h1><p class="cv-lead" id="cv-error">${esc(err.detail)}</p>
        <p><button class="jspsych-btn cv-primary" id="cv-retry" type="button">Enter another ID</button></p>`);
      document.getElementById("cv-retry").addEventListener("click", () => window.location.reload());
      return;
    }
    return page(`<h1 class="cv-title">This study cannot start</h1><p class="cv-lead" id="cv-error">${esc(err.detail || err.message)}</p>`);
  }
  if (welcome.resume_secret && welcome.resume_secret !== storedSecret) {
    try { localStorage.setItem(secretKey, welcome.resume_secret); } catch (e) { /* private mode: no resume */ }
  }
  const token = welcome.participant_token;
  const settings = welcome.settings;
  const exp = { min_view_ms: 0, advance: "continue", continue_after_ms: 350, gap_ms: 600, keyboard: false,
                ...(config.experiment || {}), ...(settings.experiment || {}) };
  const texts = { ...(config.texts || {}), ...(settings.texts || {}) };
  const base = `${API}/participants/${encodeURIComponent(token)}`;
  const state = welcome.state;
  const practice = welcome.trials.filter((t) => t.kind === "practice");
  const mainTrials = welcome.trials.filter((t) => t.kind !== "practice" && t.kind !== "example");
  const answered = new Set(state.answered);
  const remaining = mainTrials.filter((t) => !answered.has(t.trial_id));
  const nRefs = typeof texts.n_references === "number" ? texts.n_references
    : Math.max(0, ...welcome.trials.map((t) => t.references.length));
  const twoAfc = welcome.task === "two_afc";
  const render = twoAfc ? jsPsychTwoAfc.render : jsPsychCausalOcclusion.render;
  // Optional running score ("Correct so far: k of n"), only when the server sends it.
  const counterOn = settings.correct_counter === true;
  let nCorrect = state.n_correct ?? 0;
  const startStage = state.next.stage;

  if (startStage === "finished" || startStage === "declined") {
    return page(`<h1 class="cv-title">Thank you</h1><p class="cv-lead">You have already taken part in this study.</p>`);
  }
  // Warm the browser cache so that images appear together.
  [...welcome.trials, welcome.example].filter(Boolean).forEach((t) => [t.query, ...(t.options || []).map((o) => o.src),
    ...(t.references || []), ...(t.min_references || [])].filter(Boolean).forEach((u) => { new Image().src = u; }));

  const el = stage();
  const jsPsych = initJsPsych({
    display_element: el,
    show_progress_bar: true,
    auto_update_progress_bar: false,
    message_progress_bar: "Progress",
  });
  const showProgress = (on) => document.body.classList.toggle("cv-show-progress", on);
  const setProgress = () => { jsPsych.progressBar.progress = answered.size / Math.max(1, mainTrials.length); };
  const randomLeft = (t) => () => t().options[Math.random() < 0.5 ? 0 : 1].id;
  // One trial node of the study's task; `t` returns the trial (practice slots change it per
  // round); practice and main trials differ only in `extra`.
  const occlusionTrial = (t, extra) => ({
    type: twoAfc ? jsPsychTwoAfc : jsPsychCausalOcclusion,
    trial_id: () => t().trial_id,
    options: () => t().options,
    references: () => t().references,
    ...(twoAfc ? { min_references: () => t().min_references || [] } : { query: () => t().query }),
    left: randomLeft(t),
    min_view_ms: exp.min_view_ms,
    advance: exp.advance,
    continue_after_ms: exp.continue_after_ms,
    gap_ms: exp.gap_ms,
    keyboard: exp.keyboard === true,
    ...extra,
  });
  const timeline = [];
  let outcome = null; // what /finish or a declined consent answered

  // What to do with the code, per platform (Prolific: back to Prolific; MTurk: Submit HIT;
  // lab: show it to the experimenter). A declined consent shows a code only if the server
  // sends one (a Prolific no-consent code).
  const endPage = (result, declined) => {
    result = result || {};
    const code = result.completion_code;
    let action = "";
    if (result.redirect_url) {
      action = `<p><a class="jspsych-btn cv-primary" id="cv-return" href="${esc(result.redirect_url)}">Return to Prolific</a></p>
                <p class="cv-note">You will be taken back to Prolific automatically in a few seconds${code ? "; if not, click the button or enter the code above on Prolific" : ""}.</p>`;
      setTimeout(() => { window.location.href = result.redirect_url; }, 4000);
    } else if (result.mturk_submit) {
      const fields = Object.entries(result.mturk_submit.fields).map(([k, v]) => `<input type="hidden" name="${esc(k)}" value="${esc(v)}">`).join("");
      action = `<p>Click <strong>Submit HIT</strong> to finish the HIT on MTurk.</p>
        <form method="POST" action="${esc(result.mturk_submit.action)}">${fields}<button class="jspsych-btn cv-primary" id="cv-submit-hit" type="submit">Submit HIT</button></form>`;
    } else if (who.platform === "prolific" && code) {
      action = `<p class="cv-how">Please enter this code on Prolific to confirm that you ${declined ? "returned the study" : "completed the study"}.</p>`;
    } else if (who.platform === "mturk" && code) {
      action = `<p class="cv-how">Please enter this code on the HIT page on MTurk.</p>`;
    } else if (code) {
      action = `<p class="cv-how">Please show this code to the experimenter.</p>`;
    } else if (declined && who.platform === "prolific") {
      action = `<p class="cv-how">Please return your submission on Prolific.</p>`;
    } else if (declined && who.platform === "mturk") {
      action = `<p class="cv-how">Please return the HIT on MTurk.</p>`;
    } else if (declined) {
      action = `<p class="cv-how">Please tell the experimenter.</p>`;
    }
    const head = declined ? "You chose not to take part" : "Thank you for taking part!";
    const lead = declined ? "No data will be used. You may close this window." : "Your answers have been saved.";
    const codeHtml = code ? `<p>${declined ? "Your code" : "Completion code"}</p><p class="cv-code" id="cv-code">${esc(code)}</p>` : "";
    return `<div class="cv-page cv-done"><h1 class="cv-title">${head}</h1><p class="cv-lead">${lead}</p>${codeHtml}${action}</div>`;
  };

  // -- consent --------------------------------------------------------------------------
  if (startStage === "consent") {
    timeline.push({
      type: jsPsychHtmlButtonResponse,
      stimulus: `<div class="cv-page cv-text"><h1 class="cv-title">Consent to participate</h1>
        ${causalvisTexts.consent(texts, welcome.task)}</div>`,
      choices: ["I agree", "I do not agree"],
      button_html: (c, i) => `<button class="jspsych-btn ${i === 0 ? "cv-primary" : ""}" id="cv-consent-${i === 0 ? "yes" : "no"}">${c}</button>`,
      data: { screen: "consent" },
      simulation_options: { data: { response: 0 } }, // a simulated participant agrees
    });
    timeline.push({
      type: jsPsychCallFunction,
      async: true,
      func: async (done) => {
        const agreed = jsPsych.data.get().last(1).values()[0].response === 0;
        const r = (await send(`${base}/consent`, { consent: agreed })).data;
        if (!agreed) return jsPsych.abortExperiment(endPage(r, true));
        done({ consent: agreed });
      },
    });
  }

  // -- instructions ---------------------------------------------------------------------
  let instructionStart = 0;
  let instructionTime = null;
  if (startStage === "consent" || startStage === "instructions") {
    const note = texts.instructions_note ? `<p class="cv-notice">${esc(texts.instructions_note)}</p>` : "";
    const ex = welcome.example;
    const exOptions = ex ? ex.options || [] : [];
    const exLeft = exOptions.length ? exOptions[Math.random() < 0.5 ? 0 : 1].id : null;
    const exampleTrial = ex && { trial_id: ex.trial_id, query: ex.query, options: exOptions,
                                 references: ex.references, min_references: ex.min_references, left: exLeft };
    const correctFirst = ex && ex.correct === exLeft;
    const exampleAnswer = !ex || !ex.correct ? ""
      : twoAfc
        ? `<p>Here the right answer is the <strong>${correctFirst ? "top" : "bottom"} image</strong> (framed in green): it resembles the maximally activating images on the right, so the unit responds strongly to it.</p>`
        : `<p>Here the right answer is the <strong>${correctFirst ? "left" : "right"} image</strong> (framed in green): its covered patch hides less of what the unit responds to, so the unit's response drops less.</p>`;
    const exampleHtml = ex
      ? `<div class="cv-example">${render(exampleTrial, { buttons: false, highlight: ex.correct })}</div>${exampleAnswer}`
      : "";
    const scoreText = counterOn ? " A counter above each question shows how many of your answers so far were correct." : "";
    const lockText = exp.min_view_ms > 0
      ? ` The buttons of each question unlock after ${exp.min_view_ms >= 1000 ? `${Math.round(exp.min_view_ms / 100) / 10} seconds` : "a moment"}, so that you can look at the images first.`
      : "";
    const keyText = exp.keyboard ? " You can also answer with the keys shown on the buttons (1–3 and 8–0) and continue with Enter." : "";
    const afterText = exp.advance === "gap"
      ? " After your answer the next question follows by itself."
      : " After your answer, click <em>Continue</em> for the next question.";
    const confText = twoAfc
      ? "<em>I pick this one: guessing</em>, <em>fairly sure</em> or <em>very sure</em>"
      : "<em>I pick this one: very sure</em>, <em>fairly sure</em> or <em>guessing</em>";
    const practiceText = `<p>First comes a short <strong>practice</strong> with feedback. It repeats (in a new order) until you answer all practice questions correctly. Then the main part (${mainTrials.length} questions${twoAfc ? "" : ", no feedback"}) follows.${scoreText}</p>
      <p>Please do not resize the window during the study. Next we switch to full screen.</p>`;
    const intro = `<div class="cv-page cv-text"><h1 class="cv-title">Instructions</h1>
          <p>Computers recognise images with <em>artificial neural networks</em>. Such a network is made of many <strong>units</strong>; each unit responds strongly to some image content (say, a texture or an object part) and weakly to other content.</p>
          <p>${twoAfc ? "In this study you will try to tell which of two images makes one unit respond strongly." : "In this study you will try to predict how strongly one unit responds when part of an image is covered."}</p>${note}</div>`;
    const twoAfcPages = [
      intro,
      `<div class="cv-page cv-text"><h1 class="cv-title">Your task</h1>
        <p>On the <strong>left</strong> you see images that make the unit respond <strong>weakly</strong> (<em>minimally activating</em>); on the <strong>right</strong>, images that make it respond <strong>strongly</strong> (<em>maximally activating</em>).</p>
        <p>In the middle there are <strong>two more images</strong>, one above the other. One of them makes the unit respond strongly, the other weakly.</p>
        <p>Choose the image in the middle that <strong>belongs to the right side</strong>, the maximally activating one.</p></div>`,
      `<div class="cv-page cv-text cv-wide"><h1 class="cv-title">An example</h1>${exampleHtml}</div>`,
      `<div class="cv-page cv-text"><h1 class="cv-title">How to answer</h1>
        <p>Under each middle image there are three buttons. Click one under the image you think belongs to the <strong>maximally activating</strong> side; the button says how sure you are: ${confText}.</p>
        <p>There is no time limit, but please answer intuitively; most answers take a few seconds.${lockText}${afterText}${keyText}</p>
        ${practiceText}</div>`,
    ];
    timeline.push({
      type: jsPsychInstructions,
      show_clickable_nav: true,
      button_label_next: "Next",
      button_label_previous: "Back",
      allow_keys: false,
      data: { screen: "instructions" },
      // A simulated reader (~0.5 s a page); data-only even in visual mode: the plugin's visual
      // simulation clicks a "Next" button that each page replaces (jsPsych 8.3).
      simulation_options: { mode: "data-only", data: { rt: 2000 } },
      on_start: () => { instructionStart = performance.now(); },
      on_finish: () => { instructionTime = (performance.now() - instructionStart) / 1000; },
      pages: twoAfc ? twoAfcPages : [
        intro,
        `<div class="cv-page cv-text"><h1 class="cv-title">Your task</h1>${causalvisTexts.references(nRefs)}
          <p>You see an <strong>original image</strong> and, below it, <strong>two copies</strong> of it. In each copy ${causalvisTexts.patch(texts)}; the patch is in a different place in each copy.</p>
          <p>Choose the copy in which the unit <strong>still responds more strongly</strong>, that is, the copy whose covered patch hides <em>less</em> of what the unit responds to.</p></div>`,
        `<div class="cv-page cv-text cv-wide"><h1 class="cv-title">An example</h1>${exampleHtml}</div>`,
        `<div class="cv-page cv-text"><h1 class="cv-title">How to answer</h1>
          <p>Under each copy there are three buttons. Click one under the copy you choose; the button says how sure you are: ${confText}.</p>
          <p>There is no time limit, but please answer intuitively; most answers take a few seconds.${lockText}${afterText}${keyText}</p>
          ${practiceText}</div>`,
      ],
    });
  }
  timeline.push({
    type: jsPsychFullscreen,
    fullscreen_mode: true,
    message: `<div class="cv-page cv-text"><h1 class="cv-title">Full screen</h1><p>The study runs in full-screen mode so that nothing distracts you.</p></div>`,
    button_label: "Switch to full screen",
    data: { screen: "fullscreen" },
  });
  if (startStage === "consent" || startStage === "instructions") {
    timeline.push({
      type: jsPsychCallFunction,
      async: true,
      func: async (done) => {
        await send(`${base}/instructions`, {
          instruction_time_s: Math.round((instructionTime ?? 0) * 1000) / 1000,
          window_width: window.innerWidth,
          window_height: window.innerHeight,
          user_agent: navigator.userAgent.slice(0, 512),
        });
        done();
      },
    });
  }

  // -- practice -------------------------------------------------------------------------
  const submitTo = (extra) => async (answer) => {
    const payload = { trial_id: answer.trial_id, choice: answer.choice, confidence: answer.confidence,
                      rt_ms: answer.rt, left_option: answer.left_option, shown_at: answer.shown_at,
                      answered_at: answer.answered_at, ...extra() };
    try {
      return (await send(`${base}/responses`, payload)).data;
    } catch (err) {
      if (err.status === 409 && String(err.detail).includes("already")) return { duplicate: true }; // already stored: move on
      if (err.status === 409) { window.location.reload(); return new Promise(() => {}); } // out of step with the server's flow: resume where it says
      throw err;
    }
  };
  /** A new random order of the practice trials, different from `previous` when possible. */
  const reshuffle = (previous) => {
    for (let tries = 0; ; tries++) {
      const next = jsPsych.randomization.shuffle(practice);
      if (practice.length < 2 || tries > 50 || next.some((t, i) => t !== previous[i])) return next;
    }
  };
  if (practice.length && !state.practice_passed) {
    let attempt = state.practice_attempts; // each round is a new attempt
    let passed = false;
    let roundCorrect = 0;
    let rounds = 0;
    // The server sends this participant's drawn practice trials in a random order; every
    // repeat reshuffles them (the server checks the set, not the order).
    let order = practice.slice();
    timeline.push({
      timeline: [
        {
          type: jsPsychHtmlButtonResponse,
          stimulus: () => `<div class="cv-page cv-text"><h1 class="cv-title">Practice${rounds ? " again" : ""}</h1>
            <p>${practice.length} practice questions with feedback.${rounds ? " Take your time and look closely at what the unit responds to. The questions come in a new order." : ""}</p></div>`,
          choices: ["Start practice"],
          button_html: (c) => `<button class="jspsych-btn cv-primary">${c}</button>`,
          on_start: () => { attempt += 1; roundCorrect = 0; if (rounds) order = reshuffle(order); },
          data: { screen: "practice_intro" },
        },
        ...practice.map((_, i) => occlusionTrial(() => order[i], {
          mode: "practice",
          counter: () => `Practice ${i + 1} of ${practice.length}`,
          submit: submitTo(() => ({ attempt })),
          data: { screen: "practice", kind: "practice" },
          on_finish: (d) => { roundCorrect += d.correct ? 1 : 0; passed = roundCorrect === practice.length; },
        })),
        {
          type: jsPsychHtmlButtonResponse,
          stimulus: () => passed
            ? `<div class="cv-page cv-text"><h1 class="cv-title">Well done</h1><p>You answered all practice questions correctly. The main part starts next.</p></div>`
            : `<div class="cv-page cv-text"><h1 class="cv-title">${roundCorrect} of ${practice.length} correct</h1><p>To continue, all practice answers need to be correct. Let us repeat the practice.</p></div>`,
          choices: ["Continue"],
          button_html: (c) => `<button class="jspsych-btn cv-primary">${c}</button>`,
          data: { screen: "practice_summary" },
          on_finish: () => { rounds += 1; },
        },
      ],
      loop_function: () => !passed,
    });
  }

  // -- main trials ----------------------------------------------------------------------
  if (remaining.length) {
    timeline.push({
      type: jsPsychHtmlButtonResponse,
      stimulus: answered.size
        ? `<div class="cv-page cv-text"><h1 class="cv-title">Welcome back</h1><p>You have answered ${answered.size} of ${mainTrials.length} questions. Continue where you left off.</p></div>`
        : `<div class="cv-page cv-text"><h1 class="cv-title">Main part</h1><p>Now come ${mainTrials.length} questions without feedback${counterOn ? " (a counter shows how many answers were correct so far)" : ""}. A bar at the top shows your progress.</p></div>`,
      choices: ["Begin"],
      button_html: (c) => `<button class="jspsych-btn cv-primary">${c}</button>`,
      on_finish: () => { showProgress(true); setProgress(); },
      data: { screen: "main_intro" },
    });
    remaining.forEach((t) => timeline.push(occlusionTrial(() => t, {
      mode: "trial",
      counter: () => `Question ${answered.size + 1} of ${mainTrials.length}`
        + (counterOn && answered.size ? ` · <span class="cv-score">Correct so far: ${nCorrect} of ${answered.size}</span>` : ""),
      submit: submitTo(() => ({})),
      on_reply: (r) => { if (typeof r.n_correct === "number") nCorrect = r.n_correct; },
      data: { screen: "trial", kind: "main" },
      on_finish: (d) => { answered.add(d.trial_id); setProgress(); },
    })));
  }

  // -- feedback, finish, completion -----------------------------------------------------
  let feedback = null;
  if (settings.show_feedback_question && !simulateMode) { // survey-html-form cannot be simulated
    timeline.push({
      type: jsPsychSurveyHtmlForm,
      on_start: () => showProgress(false),
      preamble: `<h1 class="cv-title">Almost done</h1><p class="cv-lead">Do you have any comments about the study? (optional)</p>`,
      html: `<p><textarea name="feedback" id="cv-feedback" rows="5" cols="60" maxlength="5000" placeholder="For example: how did you decide? Was anything unclear?"></textarea></p>`,
      button_label: "Finish",
      data: { screen: "feedback" },
      on_finish: (d) => { feedback = (d.response.feedback || "").trim() || null; },
    });
  }
  timeline.push({
    type: jsPsychCallFunction,
    async: true,
    func: async (done) => {
      showProgress(false);
      outcome = (await send(`${base}/finish`, { feedback })).data;
      done(outcome);
    },
  });
  if (!simulateMode) {
    timeline.push({ type: jsPsychFullscreen, fullscreen_mode: false, delay_after: 0 });
    timeline.push({
      type: jsPsychHtmlButtonResponse,
      stimulus: () => endPage(outcome, false),
      choices: [],
      data: { screen: "completion" },
    });
    await jsPsych.run(timeline);
  } else {
    // jsPsych's simulation (data-only: no display; visual: the real screens, clicked).
    await jsPsych.simulate(timeline, simulateMode);
    if (outcome) page(endPage(outcome, false));
  }
})();
