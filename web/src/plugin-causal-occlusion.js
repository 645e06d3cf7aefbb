// jsPsych 8 plugin for one causal occlusion trial (Zimmermann et al., NeurIPS 2021):
// reference images of a unit (none in the `none` condition), the unoccluded query, and the
// two occluded copies in the given left/right order; the participant picks the copy the
// unit still responds to more, with confidence 1-3 (six buttons, as in the paper). Options
// are opaque ids (`options: [{id, src}]`, `left` = the id shown left).
"use strict";

var jsPsychCausalOcclusion = (function (jspsych) {
  const { ParameterType } = jspsych;
  const CONF_LABELS = { 3: "very sure", 2: "fairly sure", 1: "guessing" };

  const info = {
    name: "causal-occlusion",
    version: "1.0.0",
    parameters: {
      trial_id: { type: ParameterType.STRING, default: undefined },
      query: { type: ParameterType.IMAGE, default: undefined },
      references: { type: ParameterType.IMAGE, array: true, default: [] },
      ...causalvisTrialResponse.answerParameters(ParameterType),
    },
    data: causalvisTrialResponse.answerData(ParameterType),
  };

  const esc = causalvisTrialResponse.esc;

  /** The trial's markup; also used (without buttons) for the worked example in the instructions. */
  function render(t, { buttons = true, highlight = null, viewCue = "" } = {}) {
    const [first, second] = causalvisTrialResponse.order(t);
    const src = causalvisTrialResponse.sources(t);
    const refs = (t.references || []).length
      ? `<aside class="cv-refs"><h3>What the unit responds to</h3>
           <div class="cv-ref-grid">${t.references.map((r) => `<img src="${esc(r)}" alt="reference image" draggable="false">`).join("")}</div>
           <p class="cv-caption">Images that make the unit respond strongly</p></aside>`
      : "";
    const group = (side, option) => {
      const order = side === "left" ? [3, 2, 1] : [1, 2, 3];
      const btns = order.map((c) =>
        `<button type="button" class="cv-btn cv-conf-${c}" data-side="${side}" data-option="${esc(option)}" data-confidence="${c}">${CONF_LABELS[c]}</button>`).join("");
      return buttons ? `${causalvisTrialResponse.pickLabel}<div class="cv-btn-group" role="group" aria-label="I pick the ${side} image">${btns}</div>` : "";
    };
    const option = (side, option) => {
      const mark = highlight === option ? " cv-highlight" : "";
      return `<figure class="cv-option${mark}" data-side="${side}" data-option="${esc(option)}">
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
        ${viewCue}
        <div class="cv-options">${option("left", first)}${option("right", second)}</div>
        <div class="cv-feedback" aria-live="polite"></div>
      </section>
    </div>`;
  }

  class CausalOcclusionPlugin {
    constructor(jsPsych) {
      this.jsPsych = jsPsych;
    }

    trial(display_element, trial) {
      display_element.innerHTML = render(trial, { viewCue: causalvisTrialResponse.viewCue(trial.min_view_ms) });
      return causalvisTrialResponse.bind(this.jsPsych, display_element, trial, {
        optionSelector: ".cv-option",
        practiceMessage: (correct, side) =>
            correct
              ? `<div class="cv-fb cv-fb-ok"><strong>Correct.</strong> The unit responds more strongly to the ${side} image.</div>`
              : `<div class="cv-fb cv-fb-bad"><strong>Not quite.</strong> The unit responds more strongly to the <em>other</em> (${side === "left" ? "right" : "left"}) image, marked in green.</div>`,
      });
    }

    simulate(trial, simulation_mode, simulation_options, load_callback) {
      return causalvisTrialResponse.simulate(this.jsPsych, this, trial, simulation_mode, simulation_options, load_callback);
    }
  }
  CausalOcclusionPlugin.info = info;
  CausalOcclusionPlugin.render = render;
  return CausalOcclusionPlugin;
})(jsPsychModule);
