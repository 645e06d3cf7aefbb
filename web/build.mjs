// Build = copy: jsPsych's browser bundles from node_modules plus our sources into dist/.
// No bundler on purpose: the output is a handful of static files the server serves as is.
import { cpSync, mkdirSync, rmSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
const vendor = join(dist, "vendor");
const PLUGINS = [
  "plugin-html-button-response",
  "plugin-survey-html-form",
  "plugin-browser-check",
  "plugin-fullscreen",
  "plugin-instructions",
  "plugin-call-function",
];

rmSync(dist, { recursive: true, force: true });
mkdirSync(vendor, { recursive: true });
const copy = (from, to) => {
  if (!existsSync(from)) throw new Error(`missing ${from}: run npm install in web/ first`);
  cpSync(from, to);
};
copy(join(here, "node_modules/jspsych/dist/index.browser.min.js"), join(vendor, "jspsych.js"));
copy(join(here, "node_modules/jspsych/css/jspsych.css"), join(vendor, "jspsych.css"));
for (const p of PLUGINS) {
  copy(join(here, `node_modules/@jspsych/${p}/dist/index.browser.min.js`), join(vendor, `${p}.js`));
}
for (const f of ["index.html", "style.css", "api.js", "trial-response.js", "texts.js", "plugin-causal-occlusion.js", "plugin-two-afc.js", "experiment.js"]) {
  copy(join(here, "src", f), join(dist, f));
}
const version = JSON.parse(readFileSync(join(here, "node_modules/jspsych/package.json"))).version;
writeFileSync(join(dist, "build.json"), JSON.stringify({ jspsych: version, plugins: PLUGINS }, null, 2));
console.log(`web/dist built (jsPsych ${version}, ${PLUGINS.length} plugins)`);
