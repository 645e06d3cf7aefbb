// The participant's flow: identify (Prolific / MTurk / lab id) -> consent -> instructions
// with a worked example -> browser check + fullscreen -> practice with feedback until all
// correct -> main and catch trials with a progress bar -> optional feedback -> completion.
// Two tasks share this flow: causal occlusion (plugin-causal-occlusion.js) and the 2-AFC
// task of minimal vs maximal references (plugin-two-afc.js); the server says which.
// Every answer is POSTed the moment it is given; a reload resumes at the first unanswered
// trial because the server knows what was answered.
"use strict";

(async function main() {
  const API = "/api/v1";
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

  async function askLocalId() {
    const el = stage();
    const jsPsych = initJsPsych({ display_element: el });
    let id = null;
    await jsPsych.run([{
      type: jsPsychSurveyHtmlForm,
      preamble: `<h1 class="cv-title">Image study</h1><p class="cv-lead">Please enter the participant ID you were given by the experimenter.</p>`,
      html: `<p><label>Participant ID<br><input name="pid" id="cv-pid" required pattern="[A-Za-z0-9_.:@-]+" maxlength="128" autocomplete="off" autofocus></label></p>`,
      button_label: "Start",
      on_finish: (data) => { id = data.response.pid.trim(); },
    }]);
    el.remove();
    sessionStorage.setItem("causalvis-local-id", id);
    return id;
  }

  function mturkPreview() {
    page(`<h1 class="cv-title">Image study (preview)</h1>
      <p class="cv-lead">In this HIT you look at images and decide which of two partly covered copies of an image a part of an artificial neural network still responds to more strongly.</p>
      <ul class="cv-list"><li>About 10–15 minutes; a short practice with feedback comes first.</li>
      <li>A desktop or laptop computer with a window of at least 940 × 600 pixels is required.</li>
      <li>You can take part only once.</li></ul>
      <p class="cv-note">Please <strong>accept the HIT</strong> to begin.</p>`);
  }

  // -- start ------------------------------------------------------------------------------
  const who = identify();
  if (who.preview) return mturkPreview();
  if (!who.external_id) who.external_id = await askLocalId();
  const { preview, ...body } = who;
  // The server hands out a resume secret at creation; only this browser can resume with it.
  const secretKey = `causalvis-resume:${body.platform}:${body.external_id}`;
  // Made before the first POST so that a retried creation (its 201 lost) resumes too.
  const freshSecret = () => Array.from(crypto.getRandomValues(new Uint8Array(18)), (b) => b.toString(16).padStart(2, "0")).join("");
  let storedSecret = null;
  try {
    storedSecret = localStorage.getItem(secretKey);
    if (!storedSecret) { storedSecret = freshSecret(); localStorage.setItem(secretKey, storedSecret); }
  } catch (e) { storedSecret = storedSecret || freshSecret(); /* private mode: no resume after a reload */ }
  body.resume_secret = storedSecret;
  let welcome;
  try {
    welcome = (await CausalvisApi.post(`${API}/participants`, body)).data;
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
    return page(`<h1 class="cv-title">This study cannot start</h1><p class="cv-lead">${esc(err.detail || err.message)}</p>`);
  }
  if (welcome.resume_secret && welcome.resume_secret !== storedSecret) {
    try { localStorage.setItem(secretKey, welcome.resume_secret); } catch (e) { /* private mode: no resume */ }
  }
  const token = welcome.participant_token;
  const settings = welcome.settings;
  const base = `${API}/participants/${encodeURIComponent(token)}`;
  const state = welcome.state;
  const practice = welcome.trials.filter((t) => t.kind === "practice");
  const mainTrials = welcome.trials.filter((t) => t.kind !== "practice");
  const answered = new Set(state.answered);
  const remaining = mainTrials.filter((t) => !answered.has(t.trial_id));
  const hasRefs = welcome.trials.some((t) => t.references.length > 0);
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
  welcome.trials.forEach((t) => [t.query, t.options.a, t.options.b, ...t.references, ...(t.min_references || [])]
    .filter(Boolean).forEach((u) => { new Image().src = u; }));

  const el = stage();
  const jsPsych = initJsPsych({
    display_element: el,
    show_progress_bar: true,
    auto_update_progress_bar: false,
    message_progress_bar: "Progress",
  });
  const showProgress = (on) => document.body.classList.toggle("cv-show-progress", on);
  const setProgress = () => { jsPsych.progressBar.progress = answered.size / Math.max(1, mainTrials.length); };
  const randomLeft = () => (Math.random() < 0.5 ? "a" : "b");
  // One trial node of the study's task; practice and main trials differ only in `extra`.
  const occlusionTrial = (t, extra) => (twoAfc ? {
    type: jsPsychTwoAfc,
    trial_id: t.trial_id,
    option_a: t.options.a,
    option_b: t.options.b,
    references: t.references,
    min_references: t.min_references,
    left: randomLeft,
    ...extra,
  } : {
    type: jsPsychCausalOcclusion,
    trial_id: t.trial_id,
    query: t.query,
    option_a: t.options.a,
    option_b: t.options.b,
    references: t.references,
    left: randomLeft,
    ...extra,
  });
  const timeline = [];
  let outcome = null; // what /finish or a declined consent answered

  const endPage = (result, declined) => {
    let action = "";
    if (result.redirect_url) {
      action = `<p><a class="jspsych-btn cv-primary" id="cv-return" href="${esc(result.redirect_url)}">Return to Prolific</a></p>
                <p class="cv-note">You will be taken back automatically in a few seconds.</p>`;
      setTimeout(() => { window.location.href = result.redirect_url; }, 4000);
    } else if (result.mturk_submit) {
      const fields = Object.entries(result.mturk_submit.fields).map(([k, v]) => `<input type="hidden" name="${esc(k)}" value="${esc(v)}">`).join("");
      action = `<form method="POST" action="${esc(result.mturk_submit.action)}">${fields}<button class="jspsych-btn cv-primary" type="submit">Submit HIT</button></form>`;
    }
    const head = declined ? "You chose not to take part" : "Thank you for taking part!";
    const lead = declined ? "No data will be used. You may close this window." : "Your answers have been saved.";
    return `<div class="cv-page cv-done"><h1 class="cv-title">${head}</h1><p class="cv-lead">${lead}</p>
      <p>Completion code</p><p class="cv-code" id="cv-code">${esc(result.completion_code)}</p>${action}</div>`;
  };

  // -- consent --------------------------------------------------------------------------
  if (startStage === "consent") {
    timeline.push({
      type: jsPsychHtmlButtonResponse,
      stimulus: `<div class="cv-page cv-text"><h1 class="cv-title">Consent to participate</h1>
        <p>This study is part of research on how people understand artificial neural networks for image recognition.
        You will look at images and answer simple questions about them. It takes about 10–15 minutes.</p>
        <ul class="cv-list"><li>Participation is voluntary; you may stop at any time by closing the window.</li>
        <li>We record your answers, response times and the time spent on each part. We do not record your name or any other personal information; your platform ID is stored only to prevent repeated participation and for payment.</li>
        <li>The anonymous data may be published for research purposes.</li>
        <li>There are no known risks. If you have questions, please contact the researchers through the recruitment platform.</li></ul>
        <p>By clicking <em>I agree</em> you confirm that you are at least 18 years old, have read this information and agree to take part.</p></div>`,
      choices: ["I agree", "I do not agree"],
      button_html: (c, i) => `<button class="jspsych-btn ${i === 0 ? "cv-primary" : ""}" id="cv-consent-${i === 0 ? "yes" : "no"}">${c}</button>`,
      data: { screen: "consent" },
    });
    timeline.push({
      type: jsPsychCallFunction,
      async: true,
      func: async (done) => {
        const agreed = jsPsych.data.get().last(1).values()[0].response === 0;
        const r = (await CausalvisApi.post(`${base}/consent`, { consent: agreed })).data;
        if (!agreed) return jsPsych.abortExperiment(endPage(r, true));
        done({ consent: agreed });
      },
    });
  }

  // -- instructions ---------------------------------------------------------------------
  let instructionStart = 0;
  let instructionTime = null;
  if (startStage === "consent" || startStage === "instructions") {
    const refsText = hasRefs
      ? `<p>On the left you see <strong>nine images that make this unit respond strongly</strong>. They show what the unit “looks for”.</p>`
      : "";
    const ex = welcome.example;
    const exampleTrial = ex && { trial_id: ex.trial_id, query: ex.query, option_a: ex.options.a, option_b: ex.options.b,
                                 references: ex.references, min_references: ex.min_references, left: "a" };
    const exampleAnswer = !ex || !ex.correct ? ""
      : twoAfc
        ? `<p>Here the right answer is the <strong>${ex.correct === "a" ? "top" : "bottom"} image</strong> (framed in green): it resembles the maximally activating images on the right, so the unit responds strongly to it.</p>`
        : `<p>Here the right answer is the <strong>${ex.correct === "a" ? "left" : "right"} image</strong> (framed in green): its grey patch hides less of what the unit responds to, so the unit's response drops less.</p>`;
    const exampleHtml = ex
      ? `<div class="cv-example">${render(exampleTrial, { buttons: false, highlight: ex.correct })}</div>${exampleAnswer}`
      : "";
    const scoreText = counterOn ? " A counter above each question shows how many of your answers so far were correct." : "";
    const intro = `<div class="cv-page cv-text"><h1 class="cv-title">Instructions</h1>
          <p>Computers recognise images with <em>artificial neural networks</em>. Such a network is made of many <strong>units</strong>; each unit responds strongly to some image content (say, a texture or an object part) and weakly to other content.</p>
          <p>${twoAfc ? "In this study you will try to tell which of two images makes one unit respond strongly." : "In this study you will try to predict how strongly one unit responds when part of an image is covered."}</p></div>`;
    const twoAfcPages = [
      intro,
      `<div class="cv-page cv-text"><h1 class="cv-title">Your task</h1>
        <p>On the <strong>left</strong> you see images that make the unit respond <strong>weakly</strong> (<em>minimally activating</em>); on the <strong>right</strong>, images that make it respond <strong>strongly</strong> (<em>maximally activating</em>).</p>
        <p>In the middle there are <strong>two more images</strong>, one above the other. One of them makes the unit respond strongly, the other weakly.</p>
        <p>Choose the image in the middle that <strong>belongs to the right side</strong>, the maximally activating one.</p></div>`,
      `<div class="cv-page cv-text cv-wide"><h1 class="cv-title">An example</h1>${exampleHtml}</div>`,
      `<div class="cv-page cv-text"><h1 class="cv-title">How to answer</h1>
        <p>Under each middle image there are three buttons. Click the one under the image you think belongs to the <strong>maximally activating</strong> side that says how sure you are: <em>Not confident</em>, <em>Fairly confident</em> or <em>Very confident</em>.</p>
        <p>There is no time limit, but please answer intuitively; most answers take a few seconds.</p>
        <p>First comes a short <strong>practice</strong> with feedback. It repeats until you answer all practice questions correctly. Then the main part (${mainTrials.length} questions) follows.${scoreText}</p>
        <p>Please do not resize the window during the study. Next we check your window size and switch to full screen.</p></div>`,
    ];
    timeline.push({
      type: jsPsychInstructions,
      show_clickable_nav: true,
      button_label_next: "Next",
      button_label_previous: "Back",
      allow_keys: false,
      data: { screen: "instructions" },
      on_start: () => { instructionStart = performance.now(); },
      on_finish: () => { instructionTime = (performance.now() - instructionStart) / 1000; },
      pages: twoAfc ? twoAfcPages : [
        intro,
        `<div class="cv-page cv-text"><h1 class="cv-title">Your task</h1>${refsText}
          <p>You see an <strong>original image</strong> and, below it, <strong>two copies</strong> of it. In each copy a different square patch is covered with a grey-ish block.</p>
          <p>Choose the copy in which the unit <strong>still responds more strongly</strong>, that is, the copy whose covered patch hides <em>less</em> of what the unit responds to.</p></div>`,
        `<div class="cv-page cv-text cv-wide"><h1 class="cv-title">An example</h1>${exampleHtml}</div>`,
        `<div class="cv-page cv-text"><h1 class="cv-title">How to answer</h1>
          <p>Under each copy there are three buttons. Click the one under the copy you choose that says how sure you are: <em>Very confident</em>, <em>Fairly confident</em> or <em>Not confident</em>.</p>
          <p>There is no time limit, but please answer intuitively; most answers take a few seconds.</p>
          <p>First comes a short <strong>practice</strong> with feedback. It repeats until you answer all practice questions correctly. Then the main part (${mainTrials.length} questions, no feedback) follows.${scoreText}</p>
          <p>Please do not resize the window during the study. Next we check your window size and switch to full screen.</p></div>`,
      ],
    });
  }
  timeline.push({
    type: jsPsychBrowserCheck,
    features: ["width", "height", "browser", "browser_version", "mobile", "os"],
    minimum_width: settings.min_width,
    minimum_height: settings.min_height,
    window_resize_message: `<div class="cv-page cv-text"><h1 class="cv-title">Your window is too small</h1>
      <p>Please enlarge the browser window to at least <span id="browser-check-min-width"></span> × <span id="browser-check-min-height"></span> pixels.</p>
      <p>It is now <span id="browser-check-actual-width"></span> × <span id="browser-check-actual-height"></span>.</p></div>`,
    resize_fail_button_text: "I cannot make the window larger",
    inclusion_function: (d) => !d.mobile,
    exclusion_message: () => `<div class="cv-page cv-text"><h1 class="cv-title">Sorry</h1><p>This study needs a desktop or laptop computer with a window of at least ${settings.min_width} × ${settings.min_height} pixels.</p></div>`,
    data: { screen: "browser_check" },
  });
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
        await CausalvisApi.post(`${base}/instructions`, {
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
      return (await CausalvisApi.post(`${base}/responses`, payload)).data;
    } catch (err) {
      if (err.status === 409 && String(err.detail).includes("already")) return { duplicate: true }; // already stored: move on
      if (err.status === 409) { window.location.reload(); return new Promise(() => {}); } // out of step with the server's flow: resume where it says
      throw err;
    }
  };
  if (practice.length && !state.practice_passed) {
    let attempt = state.practice_attempts; // each round is a new attempt
    let passed = false;
    let roundCorrect = 0;
    let rounds = 0;
    timeline.push({
      timeline: [
        {
          type: jsPsychHtmlButtonResponse,
          stimulus: () => `<div class="cv-page cv-text"><h1 class="cv-title">Practice${rounds ? " again" : ""}</h1>
            <p>${practice.length} practice questions with feedback.${rounds ? " Take your time and look closely at what the unit responds to." : ""}</p></div>`,
          choices: ["Start practice"],
          button_html: (c) => `<button class="jspsych-btn cv-primary">${c}</button>`,
          on_start: () => { attempt += 1; roundCorrect = 0; },
          data: { screen: "practice_intro" },
        },
        ...practice.map((t, i) => occlusionTrial(t, {
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
    remaining.forEach((t) => timeline.push(occlusionTrial(t, {
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
  if (settings.show_feedback_question) {
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
      outcome = (await CausalvisApi.post(`${base}/finish`, { feedback })).data;
      done(outcome);
    },
  });
  timeline.push({ type: jsPsychFullscreen, fullscreen_mode: false, delay_after: 0 });
  timeline.push({
    type: jsPsychHtmlButtonResponse,
    stimulus: () => endPage(outcome, false),
    choices: [],
    data: { screen: "completion" },
  });
  await jsPsych.run(timeline);
})();
