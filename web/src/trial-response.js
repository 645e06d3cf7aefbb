// The answer step shared by the trial plugins (causal occlusion, 2-AFC), as in the paper:
// the buttons of a new trial stay disabled for `min_view_ms` (a shrinking bar and a hint
// say why; clicks then do nothing); one click locks every button, frames the chosen image
// and submits choice (an opaque option id) + confidence + rt through the trial's `submit`
// callback; then practice feedback (the right image framed in green + Continue), or a
// Continue button after `continue_after_ms` (>= 350), or an automatic gap of `gap_ms`.
// A double click therefore stores exactly one answer. Optional keyboard shortcuts (1-3 /
// 8-0: the first / second image's buttons in reading order, Enter for Continue). `simulate` runs jsPsych 8's
// data-only and visual simulation through the same submit path.
"use strict";

var causalvisTrialResponse = (function () {
  const esc = (s) =>
    String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const MIN_CONTINUE_MS = 350;
  const KEYS = ["1", "2", "3", "8", "9", "0"]; // first image's three buttons, second image's three
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  /** The two option ids in display order: [first (left/top), second]. */
  function order(t) {
    const ids = (t.options || []).map((o) => o.id);
    const first = ids.includes(t.left) ? t.left : ids[0];
    return [first, ids.find((id) => id !== first)];
  }

  /** id -> asset URL of a trial's options. */
  function sources(t) {
    return Object.fromEntries((t.options || []).map((o) => [o.id, o.src]));
  }

  /** Markup of the viewing-time cue (bar + hint); empty when there is no locked time. */
  function viewCue(ms) {
    if (!(ms > 0)) return "";
    return `<div class="cv-viewcue" role="status"><div class="cv-viewbar" style="animation-duration:${Math.round(ms)}ms"></div>
      <span class="cv-viewhint">Look at the images first…</span></div>`;
  }

  /** Label above a button group: the buttons say how sure the participant is of THIS image. */
  const pickLabel = '<div class="cv-pick">I pick this one:</div>';

  /**
   * Wire the `.cv-btn` buttons of a rendered trial.
   * @param {object} jsPsych the running instance (finishTrial, pluginAPI)
   * @param {HTMLElement} display_element
   * @param {object} trial the plugin's trial parameters (trial_id, options, left, mode,
   *   submit, on_reply, min_view_ms, advance, continue_after_ms, gap_ms, keyboard)
   * @param {object} ui `optionSelector` (the element of one option, has data-option) and
   *   `practiceMessage(correct, side)` -> HTML of the practice feedback
   * @returns {{answer: (btn: HTMLElement) => void, unlocked: Promise<void>}}
   */
  function bind(jsPsych, display_element, trial, ui) {
    const buttons = [...display_element.querySelectorAll(".cv-btn")];
    const feedback = display_element.querySelector(".cv-feedback");
    const start = performance.now();
    const shownAt = Date.now();
    let answered = false;
    let locked = trial.min_view_ms > 0;
    let keyListener = null;
    const cancelKeys = () => {
      if (keyListener) jsPsych.pluginAPI.cancelKeyboardResponse(keyListener);
      keyListener = null;
    };
    buttons.forEach((b) => (b.disabled = locked));
    const unlocked = locked
      ? sleep(trial.min_view_ms).then(() => {
          locked = false;
          if (!answered) buttons.forEach((b) => (b.disabled = false));
          display_element.querySelector(".cv-viewcue")?.classList.add("cv-viewcue-done");
        })
      : Promise.resolve();

    const waitContinue = async (delayMs) => {
      await sleep(Math.max(MIN_CONTINUE_MS, delayMs || 0));
      feedback.insertAdjacentHTML("beforeend", '<button type="button" class="jspsych-btn cv-primary cv-continue">Continue</button>');
      const btn = feedback.querySelector(".cv-continue");
      btn.focus({ preventScroll: true });
      await new Promise((resolve) => {
        btn.addEventListener("click", resolve, { once: true });
        if (trial.keyboard) {
          keyListener = jsPsych.pluginAPI.getKeyboardResponse({
            callback_function: () => resolve(), valid_responses: ["Enter", " "],
            rt_method: "performance", persist: false, allow_held_key: false,
          });
        }
      });
      cancelKeys();
    };

    const answer = async (btn) => {
      if (answered || locked || !btn) return;
      answered = true;
      cancelKeys();
      const rt = Math.max(1, Math.round(performance.now() - start));
      buttons.forEach((b) => (b.disabled = true));
      btn.classList.add("cv-selected");
      const chosenEl = display_element.querySelector(`${ui.optionSelector}[data-option="${btn.dataset.option}"]`);
      chosenEl?.classList.add("cv-chosen");
      const data = {
        trial_id: trial.trial_id,
        choice: btn.dataset.option,
        confidence: Number(btn.dataset.confidence),
        left_option: order(trial)[0],
        side: btn.dataset.side,
        rt,
        shown_at: shownAt,
        answered_at: Date.now(),
        correct: null,
      };
      const shown = performance.now();
      let reply = null;
      if (trial.submit) {
        const slow = setTimeout(() => (feedback.innerHTML = '<span class="cv-saving">Saving…</span>'), 600);
        try {
          reply = await trial.submit(data);
        } catch (err) {
          clearTimeout(slow);
          feedback.innerHTML = `<div class="cv-fb cv-fb-bad">Your answer could not be saved (${esc(err.message || err)}). Please reload the page to continue.</div>`;
          return;
        }
        clearTimeout(slow);
        feedback.innerHTML = "";
      }
      if (reply && typeof reply.correct === "boolean") data.correct = reply.correct;
      const elapsed = performance.now() - shown;
      if (trial.mode === "practice" && reply && typeof reply.correct === "boolean") {
        const other = display_element.querySelector(`${ui.optionSelector}:not([data-option="${data.choice}"])`);
        (reply.correct ? chosenEl : other)?.classList.add("cv-highlight");
        feedback.innerHTML = ui.practiceMessage(reply.correct, data.side);
        await waitContinue(trial.continue_after_ms - elapsed);
      } else {
        if (trial.on_reply && reply) trial.on_reply(reply);
        if (trial.advance === "gap") await sleep(Math.max(0, (trial.gap_ms || 0) - elapsed));
        else await waitContinue(trial.continue_after_ms - elapsed);
      }
      display_element.innerHTML = "";
      jsPsych.finishTrial(data);
    };
    buttons.forEach((b) => b.addEventListener("click", (ev) => answer(ev.currentTarget)));
    if (trial.keyboard) {
      buttons.forEach((b, i) => { if (KEYS[i]) b.insertAdjacentHTML("beforeend", ` <kbd>${KEYS[i]}</kbd>`); });
      keyListener = jsPsych.pluginAPI.getKeyboardResponse({
        callback_function: (info) => answer(buttons[KEYS.indexOf(info.key)]),
        valid_responses: KEYS.slice(0, buttons.length),
        rt_method: "performance", persist: true, allow_held_key: false,
      });
    }
    return { answer, unlocked };
  }

  // What a simulated participant learnt from practice feedback: trial id -> right option id
  // (so that simulated practice ends: a guesser could fail the all-correct gate forever).
  const learnt = new Map();
  const learn = (data) => {
    if (typeof data.correct !== "boolean") return;
    const ids = order_ids(data);
    learnt.set(data.trial_id, data.correct ? data.choice : ids.find((id) => id !== data.choice));
  };
  const order_ids = (data) => data.option_ids || [];

  /** The simulated answer: simulation_options.data may fix choice/confidence/rt. */
  function simulatedAnswer(jsPsych, trial, simulation_options) {
    const ids = order(trial);
    const defaults = {
      choice: learnt.get(trial.trial_id) || ids[Math.random() < 0.5 ? 0 : 1],
      confidence: 1 + Math.floor(Math.random() * 3),
      rt: Math.round((trial.min_view_ms || 0) + jsPsych.randomization.sampleExGaussian(900, 150, 1 / 300, true)),
    };
    return jsPsych.pluginAPI.mergeSimulationData(defaults, simulation_options);
  }

  /**
   * jsPsych 8 simulation of an answer-giving trial. data-only: the answer is submitted to
   * the server (the same `submit` callback) without any display; visual: the real trial is
   * shown and its buttons are clicked once they unlock (and Continue after it appears).
   */
  function simulate(jsPsych, plugin, trial, simulation_mode, simulation_options, load_callback) {
    // Returns nothing: jsPsych would take a returned promise's value as the trial's data;
    // the trial ends through finishTrial, as a real one does.
    runSimulation(jsPsych, plugin, trial, simulation_mode, simulation_options, load_callback);
  }

  async function runSimulation(jsPsych, plugin, trial, simulation_mode, simulation_options, load_callback) {
    const want = simulatedAnswer(jsPsych, trial, simulation_options);
    if (trial.submit) {
      const submit = trial.submit;
      trial = { ...trial, submit: async (data) => {
        const reply = await submit(data);
        if (reply && typeof reply.correct === "boolean") {
          learn({ trial_id: data.trial_id, choice: data.choice, correct: reply.correct, option_ids: order(trial) });
        }
        return reply;
      } };
    }
    if (simulation_mode === "visual") {
      const display_element = jsPsych.getDisplayElement();
      const wired = plugin.trial(display_element, trial);
      load_callback();
      await wired.unlocked;
      await sleep(Math.max(0, want.rt - (trial.min_view_ms || 0)));
      const btn = display_element.querySelector(`.cv-btn[data-option="${want.choice}"][data-confidence="${want.confidence}"]`);
      wired.answer(btn);
      const poll = setInterval(() => {
        const next = display_element.querySelector(".cv-continue");
        if (next) { clearInterval(poll); next.click(); }
        if (!display_element.querySelector(".cv-trial")) clearInterval(poll);
      }, 50);
      return;
    }
    load_callback();
    const shownAt = Date.now();
    const ids = order(trial);
    const data = {
      trial_id: trial.trial_id, choice: want.choice, confidence: want.confidence, left_option: ids[0],
      side: want.choice === ids[0] ? "left" : "right", rt: Math.max(1, want.rt),
      shown_at: shownAt, answered_at: shownAt + Math.max(1, want.rt), correct: null,
    };
    const reply = trial.submit ? await trial.submit(data) : null;
    if (reply && typeof reply.correct === "boolean") data.correct = reply.correct;
    if (trial.mode !== "practice" && trial.on_reply && reply) trial.on_reply(reply);
    jsPsych.finishTrial(data);
  }

  /** Parameters every answer-giving trial plugin takes (besides its images). */
  function answerParameters(ParameterType) {
    return {
      /** The two options, [{id, src}], ids opaque (they say nothing about the answer). */
      options: { type: ParameterType.COMPLEX, array: true, default: [] },
      /** The id of the option shown first (left, or top); the caller randomizes it. */
      left: { type: ParameterType.STRING, default: null },
      /** "trial" (answer is sent, no feedback), "practice" (feedback after the answer). */
      mode: { type: ParameterType.STRING, default: "trial" },
      /** async (answer) => server reply; the trial ends only once the answer is stored. */
      submit: { type: ParameterType.FUNCTION, default: null },
      /** A line above the trial, e.g. "Practice 1 of 4". */
      counter: { type: ParameterType.HTML_STRING, default: "" },
      /** Called with the server reply of a main trial (e.g. to update a running score). */
      on_reply: { type: ParameterType.FUNCTION, default: null },
      /** Buttons stay disabled this long after the trial appears ([experiment] min_view_ms). */
      min_view_ms: { type: ParameterType.INT, default: 0 },
      /** After an answer: "continue" (a Continue button) or "gap" (automatic, gap_ms). */
      advance: { type: ParameterType.STRING, default: "continue" },
      /** The Continue button appears this long after the click (at least 350 ms). */
      continue_after_ms: { type: ParameterType.INT, default: MIN_CONTINUE_MS },
      /** The pause before the next trial when advance = "gap". */
      gap_ms: { type: ParameterType.INT, default: 600 },
      /** Keyboard shortcuts: 1-3 / 8-0 answer (first / second image), Enter continues. */
      keyboard: { type: ParameterType.BOOL, default: false },
    };
  }

  /** The data every answer-giving trial records (what `bind` passes to finishTrial). */
  function answerData(ParameterType) {
    return {
      trial_id: { type: ParameterType.STRING },
      choice: { type: ParameterType.STRING },
      confidence: { type: ParameterType.INT },
      left_option: { type: ParameterType.STRING },
      side: { type: ParameterType.STRING },
      rt: { type: ParameterType.INT },
      shown_at: { type: ParameterType.INT },
      answered_at: { type: ParameterType.INT },
      correct: { type: ParameterType.BOOL },
    };
  }

  return { bind, simulate, esc, order, sources, viewCue, pickLabel, answerParameters, answerData };
})();
