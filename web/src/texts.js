// Participant-facing texts generated from the study's settings (settings.texts of the
// welcome, or GET /api/v1/config before a participant exists): consent, counts in words,
// the patch description, the duration. Nothing here is hard-coded study knowledge: the
// numbers come from the server so that the text says what the participant will see.
"use strict";

var causalvisTexts = (function () {
  const esc = causalvisTrialResponse.esc;
  const WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"];
  /** 9 -> "nine", 24 -> "24" (style guides spell out small numbers). */
  const count = (n) => (Number.isInteger(n) && n >= 0 && n < WORDS.length ? WORDS[n] : String(n));
  const FILL = { mean: "filled with its own average colour", grey: "filled with grey", gray: "filled with grey",
                 blur: "blurred", noise: "filled with random noise" };

  /** "a square patch (40 % of the image side) is filled with its own average colour". */
  function patch(t) {
    const p = (t && t.patch) || {};
    const size = p.percent ? ` (${esc(p.percent)} % of the image's side)` : "";
    return `a square patch${size} is ${FILL[p.fill] || "covered"}`;
  }

  /** "about 12 minutes" (or "a few minutes" when unknown). */
  function duration(t) {
    const m = t && Number(t.duration_minutes);
    return m > 0 ? `about ${m} minute${m === 1 ? "" : "s"}` : "a few minutes";
  }

  /** Institution / contact / ethics lines, each only when set. */
  function who(t) {
    const lines = [
      t.institution && `<li>This study is run by ${esc(t.institution)}.</li>`,
      t.contact && `<li>Questions about the study: ${esc(t.contact)}.</li>`,
      t.ethics && `<li>${esc(t.ethics)}</li>`,
    ].filter(Boolean);
    return lines.join("");
  }

  /** The consent page body: the study's own paragraphs, or the default text. */
  function consent(t, task) {
    t = t || {};
    const colour = t.colour_vision_notice ? `<p class="cv-notice">${esc(t.colour_vision_notice)}</p>` : "";
    if (Array.isArray(t.consent_paragraphs) && t.consent_paragraphs.length) {
      return t.consent_paragraphs.map((p) => `<p>${esc(p)}</p>`).join("") + colour;
    }
    const what = task === "two_afc"
      ? "You will look at images and decide which of two images belongs with a set of example images."
      : "You will look at images and decide which of two partly covered copies of an image a part of an artificial neural network still responds to more strongly.";
    return `<p>This study is part of research on how people understand artificial neural networks for image recognition.
        ${what} It takes ${duration(t)}.</p>${colour}
        <ul class="cv-list"><li>Participation is voluntary; you may stop at any time by closing the window.</li>
        <li>We record your answers, response times and the time spent on each part. We do not record your name or any other personal information; your platform ID is stored only to prevent repeated participation and for payment.</li>
        <li>The anonymous data may be published for research purposes.</li>
        <li>There are no known risks.${t.contact ? "" : " If you have questions, please contact the researchers through the recruitment platform."}</li>${who(t)}</ul>
        <p>By clicking <em>I agree</em> you confirm that you are at least 18 years old, have read this information and agree to take part.</p>`;
  }

  /** The causal task's reference sentence; "" in the `none` condition (no references). */
  function references(n) {
    if (!(n > 0)) return "";
    return `<p>On the left you see <strong>${count(n)} image${n === 1 ? "" : "s"} that make${n === 1 ? "s" : ""} this unit respond strongly</strong>. They show what the unit “looks for”.</p>`;
  }

  return { count, patch, duration, consent, references, esc };
})();
