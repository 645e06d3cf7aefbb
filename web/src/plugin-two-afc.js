// jsPsych 8 plugin for one 2-AFC trial (Borowski, Zimmermann et al., ICLR 2021; IMI,
// NeurIPS 2023): minimally activating references of a unit on the left, maximally activating
// references on the right, and two query images in the middle, one above the other (the
// caller randomizes which option comes first). Under each query three buttons say how sure
// the participant is that THIS query belongs to the maximal (right) side. Options are
// opaque ids (`options: [{id, src}]`, `left` = the id shown on top).
"use strict";

var jsPsychTwoAfc = (function (jspsych) {
  const { ParameterType } = jspsych;
  const CONF_LABELS = { 1: "guessing", 2: "fairly sure", 3: "very sure" };

  const info = {
    name: "two-afc",
    version: "1.0.0",
    parameters: {
      trial_id: { type: ParameterType.STRING, default: undefined },
      /** The maximally activating references (shown on the right). */
      references: { type: ParameterType.IMAGE, array: true, default: [] },
      /** The minimally activating references (shown on the left). */
      min_references: { type: ParameterType.IMAGE, array: true, default: [] },
      ...causalvisTrialResponse.answerParameters(ParameterType),
    },
    data: causalvisTrialResponse.answerData(ParameterType),
  };

  const esc = causalvisTrialResponse.esc;
  const POS = { left: "top", right: "bottom" }; // "left" = the first option, shown on top

  /** The trial's markup; also used (without buttons) for the worked example in the instructions. */
  function render(t, { buttons = true, highlight = null, viewCue = "" } = {}) {
    const [first, second] = causalvisTrialResponse.order(t);
    const src = causalvisTrialResponse.sources(t);
    const grid = (cls, title, caption, refs) => `<aside class="cv-refs ${cls}"><h3>${title}</h3>
        <div class="cv-ref-grid">${refs.map((r) => `<img src="${esc(r)}" alt="${cls === "cv-refs-min" ? "minimally" : "maximally"} activating image" draggable="false">`).join("")}</div>
        <p class="cv-caption">${caption}</p></aside>`;
    const group = (side, option) => {
      const btns = [1, 2, 3].map((c) =>
        `<button type="button" class="cv-btn cv-conf-${c}" data-side="${side}" data-option="${esc(option)}" data-confidence="${c}">${CONF_LABELS[c]}</button>`).join("");
      return buttons ? `<div class="cv-btn-row">${causalvisTrialResponse.pickLabel}<div class="cv-btn-group" role="group" aria-label="I pick the ${POS[side]} image: it belongs to the maximal side">${btns}</div></div>` : "";
    };
    const query = (side, option) => {
      const mark = highlight === option ? " cv-highlight" : "";
      return `<figure class="cv-option cv-afc-query${mark}" data-side="${side}" data-option="${esc(option)}">
          <img src="${esc(src[option])}" alt="${POS[side]} query image" draggable="false">
          ${group(side, option)}
        </figure>`;
    };
    return `<div class="cv-trial cv-afc" data-trial-id="${esc(t.trial_id)}">
      ${grid("cv-refs-min", "Minimally activating", "Images that make the unit respond weakly", t.min_references || [])}
      <section class="cv-task cv-afc-task">
        ${t.counter ? `<div class="cv-counter">${t.counter}</div>` : ""}
        <p class="cv-question">Which image belongs with the <strong>maximally activating</strong> images?</p>
        ${viewCue}
        <div class="cv-afc-queries">${query("left", first)}${query("right", second)}</div>
        <div class="cv-feedback" aria-live="polite"></div>
      </section>
      ${grid("cv-refs-max", "Maximally activating", "Images that make the unit respond strongly", t.references || [])}
    </div>`;
  }

  class TwoAfcPlugin {
    constructor(jsPsych) {
      this.jsPsych = jsPsych;
    }

    trial(display_element, trial) {
      display_element.innerHTML = render(trial, { viewCue: causalvisTrialResponse.viewCue(trial.min_view_ms) });
      return causalvisTrialResponse.bind(this.jsPsych, display_element, trial, {
        optionSelector: ".cv-afc-query",
        practiceMessage: (correct, side) => {
            const pos = POS[side];
            const otherPos = pos === "top" ? "bottom" : "top";
            return correct
              ? `<div class="cv-fb cv-fb-ok"><strong>Correct.</strong> The ${pos} image belongs to the maximally activating side.</div>`
              : `<div class="cv-fb cv-fb-bad"><strong>Not quite.</strong> The <em>other</em> (${otherPos}) image, marked in green, belongs to the maximally activating side.</div>`;
          },
      });
    }

    simulate(trial, simulation_mode, simulation_options, load_callback) {
      return causalvisTrialResponse.simulate(this.jsPsych, this, trial, simulation_mode, simulation_options, load_callback);
    }
  }
  TwoAfcPlugin.info = info;
  TwoAfcPlugin.render = render;
  return TwoAfcPlugin;
})(jsPsychModule);
