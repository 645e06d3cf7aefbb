// Talking to the causalvis server: JSON over fetch, retried with exponential backoff on
// network errors, 5xx (e.g. 503 while the database is full) and 429 (too many new
// participants at once) so that no answer is lost when the connection drops.
"use strict";

const CausalvisApi = (() => {
  const banner = () => document.getElementById("net-banner");
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  /** The server's `detail` as one readable line: FastAPI's 422 sends a list of
   *  {loc, msg} objects, which must never reach the page as "[object Object]". */
  function readable(detail) {
    if (detail == null) return "";
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map(readable).filter(Boolean).join("; ");
    if (typeof detail === "object") {
      const field = Array.isArray(detail.loc) ? detail.loc.filter((x) => x !== "body").join(".") : "";
      const msg = detail.msg || detail.message || detail.detail;
      if (msg) return field ? `${field}: ${readable(msg)}` : readable(msg);
      return JSON.stringify(detail);
    }
    return String(detail);
  }

  class HttpError extends Error {
    constructor(status, detail, data) {
      super(`${status}: ${readable(detail)}`);
      this.status = status;
      this.detail = readable(detail);
      this.data = data || {}; // the whole JSON answer (e.g. "study_full" and where to go)
    }
  }

  async function request(method, path, body, { retries = Infinity } = {}) {
    let delay = 400;
    for (let attempt = 0; ; attempt++) {
      let response;
      try {
        response = await fetch(path, {
          method,
          headers: body === undefined ? {} : { "Content-Type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
          cache: "no-store",
        });
      } catch (err) {
        response = null; // offline, DNS, connection reset: retry
      }
      if (response && response.status < 500 && response.status !== 429) {
        if (banner()) banner().hidden = true;
        const data = await response.json().catch(() => ({}));
        if (!response.ok) throw new HttpError(response.status, data.detail || response.statusText, data);
        return { status: response.status, data };
      }
      if (attempt >= retries) throw new HttpError(response ? response.status : 0, "network error");
      if (banner() && attempt >= 1) banner().hidden = false;
      await sleep(delay + Math.random() * 200);
      delay = Math.min(delay * 2, 15000);
    }
  }

  return {
    HttpError,
    readable,
    get: (path) => request("GET", path),
    post: (path, body) => request("POST", path, body === undefined ? {} : body),
  };
})();
