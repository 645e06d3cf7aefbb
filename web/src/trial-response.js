// The answer step shared by the trial plugins (causal occlusion, 2-AFC): a click on one of
// the confidence buttons records choice + confidence + rt, submits it through the trial's
// `submit` callback (the API), shows practice feedback (the right option framed in green,
// Continue) or hands the reply to `on_reply` (the correct counter), then ends the trial.
"use strict";

var causalvisTrialResponse = (function () {
  const esc = (s) =>
    String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  /**
   * Wire the `.cv-btn` buttons of a rendered trial.
   * @param {object} jsPsych the running instance (finishTrial)
   * @param {HTMLElement} display_element
   * @param {object} trial the plugin's trial parameters (trial_id, left, mode, submit, on_reply)
   * @param {object} ui `optionSelector` (the element of one option, has data-side) and
   *   `practiceMessage(correct, side)` -> HTML of the practice feedback
   */
  function bind(jsPsych, display_element, trial, ui) {
    const buttons = [...display_element.querySelectorAll(".cv-btn")];
    const feedback = display_element.querySelector(".cv-feedback");
    const start = performance.now();
    const shownAt = Date.now();
    let answered = false;

    const onClick = async (ev) => {
      if (answered) return;
      answered = true;
      const btn = ev.currentTarget;
      const rt = Math.max(1, Math.round(performance.now() - start));
      buttons.forEach((b) => (b.disabled = true));
      btn.classList.add("cv-selected");
      const data = {
        trial_id: trial.trial_id,
        choice: btn.dataset.option,
        confidence: Number(btn.dataset.confidence),
        left_option: trial.left,
        side: btn.dataset.side,
        rt,
        shown_at: shownAt,
        answered_at: Date.now(),
        correct: null,
      };
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
      if (trial.mode === "practice" && reply && typeof reply.correct === "boolean") {
        const chosen = display_element.querySelector(`${ui.optionSelector}[data-side="${data.side}"]`);
        const other = display_element.querySelector(`${ui.optionSelector}:not([data-side="${data.side}"])`);
        (reply.correct ? chosen : other).classList.add("cv-highlight");
        feedback.innerHTML = ui.practiceMessage(reply.correct, data.side);
        feedback.insertAdjacentHTML("beforeend", '<button type="button" class="jspsych-btn cv-primary cv-continue">Continue</button>');
        await new Promise((resolve) => feedback.querySelector(".cv-continue").addEventListener("click", resolve, { once: true }));
      } else if (trial.on_reply && reply) {
        trial.on_reply(reply);
      }
      display_element.innerHTML = "";
      jsPsych.finishTrial(data);
    };
    buttons.forEach((b) => b.addEventListener("click", onClick));
  }

  /** Parameters every answer-giving trial plugin takes (besides its images). */
  function answerParameters(ParameterType) {
    return {
      /** Which option ("a" or "b") is shown first (left, or top); the caller randomizes it. */
      left: { type: ParameterType.STRING, default: "a" },
      /** "trial" (answer is sent, no feedback), "practice" (feedback after the answer). */
      mode: { type: ParameterType.STRING, default: "trial" },
      /** async (answer) => server reply; the trial ends only once the answer is stored. */
      submit: { type: ParameterType.FUNCTION, default: null },
      /** A line above the trial, e.g. "Practice 1 of 4". */
      counter: { type: ParameterType.HTML_STRING, default: "" },
      /** Called with the server reply of a main trial (e.g. to update a running score). */
      on_reply: { type: ParameterType.FUNCTION, default: null },
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

  return { bind, esc, answerParameters, answerData };
})();
