// What the pages say when something fails: a sentence from the dictionaries (no network, and
// the common HTTP answers: 400, 401, 403, 404, 409, 413, 422, 429, a server error), with the
// server's own words (English, written for API users) only as a smaller second line.
import { t } from "/static/common/i18n.js";
import { ApiError, NetworkError } from "/static/common/api.js";

const KNOWN_STATUS = [400, 401, 403, 404, 409, 413, 422, 429];

// { text, detail }: the page's sentence and the server's (or the browser's) own words.
export function describeError(e) {
  if (e instanceof NetworkError || (e && e.name === "AbortError")) {
    return { text: t("error.network"), detail: "" };
  }
  if (e instanceof ApiError) {
    let text;
    if (KNOWN_STATUS.includes(e.status)) text = t("error.http_" + e.status);
    else if (e.status >= 500) text = t("error.server", { status: e.status });
    else text = t("error.status", { status: e.status });
    return { text, detail: e.detail || "" };
  }
  return { text: t("error.unexpected"), detail: e && e.message ? e.message : String(e) };
}

// Fill an element with a sentence (by default the error's own) and the detail under it.
export function showError(el, e, text) {
  const said = describeError(e);
  fillMessage(el, text || said.text, said.detail);
}

// A message and, if any, a smaller second line (e.g. the server's words).
export function fillMessage(el, text, detail = "") {
  el.replaceChildren(document.createTextNode(text));
  if (detail) {
    const small = document.createElement("small");
    small.className = "error-detail";
    small.textContent = detail;
    el.append(small);
  }
}
