// jsPsych 8 plugin for one causal occlusion trial (Zimmermann et al., NeurIPS 2021):
// reference images of a unit (none in the `none` condition), the unoccluded query, and the
// two occluded copies in the given left/right order; the participant picks the copy the
// unit still responds to more, with confidence 1-3 (six buttons, as in the paper).
"use strict";

var jsPsychCausalOcclusion = (function (jspsych) {
  const { ParameterType } = jspsych;
  const CONF_LABELS = { 3: "Very confident", 2: "Fairly confident", 1: "Not confident" };

  const info = {
    name: "causal-occlusion",
    version: "1.0.0",
    parameters: {
      trial_id: { type: ParameterType.STRING, default: undefined },
      query: { type: ParameterType.IMAGE, default: undefined },
      option_a: { type: ParameterType.IMAGE, default: undefined },
      option_b: { type: ParameterType.IMAGE, default: undefined },
      references: { type: ParameterType.IMAGE, array: true, default: [] },
      /** Which option ("a" or "b") is shown on the left; the caller randomizes it. */
      left: { type: ParameterType.STRING, default: "a" },
      /** "trial" (answer is sent, no feedback), "practice" (feedback after the answer). */
      mode: { type: ParameterType.STRING, default: "trial" },
      /** async (answer) => server reply; the trial ends only once the answer is stored. */
      submit: { type: ParameterType.FUNCTION, default: null },
      /** A line above the trial, e.g. "Practice 1 of 4". */
      counter: { type: ParameterType.HTML_STRING, default: "" },
      /** Called with the server reply of a main trial (e.g. to update a running score). */
      on_reply: { type: ParameterType.FUNCTION, default: null },
    },
    data: {
      trial_id: { type: ParameterType.STRING },
      choice: { type: ParameterType.STRING },
      confidence: { type: ParameterType.INT },
      left_option: { type: ParameterType.STRING },
      side: { type: ParameterType.STRING },
      rt: { type: ParameterType.INT },
      shown_at: { type: ParameterType.INT },
      answered_at: { type: ParameterType.INT },
      correct: { type: ParameterType.BOOL },
    },
  };

  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  /** The trial's markup; also used (without buttons) for the worked example in the instructions. */
  function render(t, { buttons = true, highlight = null } = {}) {
    const right = t.left === "a" ? "b" : "a";
    const src = { a: t.option_a, b: t.option_b };
    const refs = (t.references || []).length
      ? `<aside class="cv-refs"><h3>What the unit responds to</h3>
           <div class="cv-ref-grid">${t.references.map((r) => `<img src="${esc(r)}" alt="reference image" draggable="false">`).join("")}</div>
           <p class="cv-caption">Images that make the unit respond strongly</p></aside>`
      : "";
    const group = (side, option) => {
      const order = side === "left" ? [3, 2, 1] : [1, 2, 3];
      const btns = order.map((c) =>
        `<button type="button" class="cv-btn cv-conf-${c}" data-side="${side}" data-option="${option}" data-confidence="${c}">${CONF_LABELS[c]}</button>`).join("");
      return buttons ? `<div class="cv-btn-group" role="group" aria-label="${side} image">${btns}</div>` : "";
    };
    const option = (side, option) => {
      const mark = highlight === option ? " cv-highlight" : "";
      return `<figure class="cv-option${mark}" data-side="${side}">
          <figcaption>${side === "left" ? "Left" : "Right"} image</figcaption>
          <img src="${esc(src[option])}" alt="${side} occluded image" draggable="false">
          ${group(side, option)}
        </figure>`;
    };
    return `<div class="cv-trial${refs ? "" : " cv-no-refs"}" data-trial-id="${esc(t.trial_id)}">
      ${refs}
      <section class="cv-task">
        ${t.counter ? `<div class="cv-counter">${t.counter}</div>` : ""}
        <figure class="cv-query"><figcaption>Original image</figcaption>
          <img src="${esc(t.query)}" alt="original image" draggable="false"></figure>
        <p class="cv-question">In which image does the unit still respond <strong>more strongly</strong>?</p>
        <div class="cv-options">${option("left", t.left)}${option("right", right)}</div>
        <div class="cv-feedback" aria-live="polite"></div>
      </section>
    </div>`;
  }

  class CausalOcclusionPlugin {
    constructor(jsPsych) {
      this.jsPsych = jsPsych;
    }

    trial(display_element, trial) {
      display_element.innerHTML = render(trial);
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
        if (trial.mode === "practice" && reply && typeof reply.correct === "boolean") {
          data.correct = reply.correct;
          const chosen = display_element.querySelector(`.cv-option[data-side="${data.side}"]`);
          const other = display_element.querySelector(`.cv-option:not([data-side="${data.side}"])`);
          (reply.correct ? chosen : other).classList.add("cv-highlight");
          feedback.innerHTML = reply.correct
            ? `<div class="cv-fb cv-fb-ok"><strong>Correct.</strong> The unit responds more strongly to the ${data.side} image.</div>`
            : `<div class="cv-fb cv-fb-bad"><strong>Not quite.</strong> The unit responds more strongly to the <em>other</em> (${data.side === "left" ? "right" : "left"}) image, marked in green.</div>`;
          feedback.insertAdjacentHTML("beforeend", '<button type="button" class="jspsych-btn cv-primary cv-continue">Continue</button>');
          await new Promise((resolve) => feedback.querySelector(".cv-continue").addEventListener("click", resolve, { once: true }));
        } else if (trial.on_reply && reply) {
          trial.on_reply(reply);
        }
        display_element.innerHTML = "";
        this.jsPsych.finishTrial(data);
      };
      buttons.forEach((b) => b.addEventListener("click", onClick));
    }
  }
  CausalOcclusionPlugin.info = info;
  CausalOcclusionPlugin.render = render;
  return CausalOcclusionPlugin;
})(jsPsychModule);
