// Why a ticket changed and who changed it, in the page's language. The server gives each audit
// row's reason as a code with parameters (dispatcher/reasons.py) beside its English text; the
// dictionaries put the code into words (audit_reason.<code>) and each parameter is shown by
// what it holds: a time in the site's time zone, a duration, a grid cell's or a worker's name.
// Rows written before codes existed, and codes this page does not know, show the stored text.
import { t, hasKey, formatDuration, formatTime } from "/static/common/i18n.js";

// names: optional lookups from the page, { grid: (id) => name, worker: (id) => name }.
export function reasonText(entry, names = {}) {
  if (!entry || !entry.reason_code) return (entry && entry.reason) || "";
  const text = phrase(entry.reason_code, entry.reason_params || {}, names);
  return text === null ? entry.reason || "" : text;
}

function phrase(code, params, names) {
  if (!hasKey("audit_reason." + code)) return null;
  const own = t("audit_reason." + code, words(params, names));
  if (!params.cause) return own;
  const first = phrase(params.cause.code, params.cause.params || {}, names);
  return first === null ? null : t("audit_reason.then", { first, then: own });
}

const SHOW = {
  grid: (v, names) => (names.grid ? names.grid(v) : v),
  neighbour: (v, names) => (names.grid ? names.grid(v) : v),
  worker: (v, names) => (names.worker ? names.worker(v) : v),
  seconds: (v) => formatDuration(Number(v)),
  deadline: (v) => formatTime(v),
  by: (v) => t("reason_by." + v),
  ids: (v) => (Array.isArray(v) ? v.join(t("audit_reason.sep")) : String(v)),
};

function words(params, names) {
  const out = {};
  for (const [name, value] of Object.entries(params)) {
    if (name === "cause") continue;
    out[name] = SHOW[name] ? SHOW[name](value, names) : String(value);
  }
  return out;
}

// "system", "system:verify", "timer:sla", "device:edge-01", "worker:w01"… as words: a known
// actor by its own key, else its kind's key with the id (a worker's by name when the page
// knows it), else as stored.
export function actorText(actor, names = {}) {
  if (!actor) return "–";
  const whole = actor.replace(":", ".");
  if (hasKey("actor." + whole)) return t("actor." + whole);
  const cut = actor.indexOf(":");
  const kind = cut < 0 ? "" : actor.slice(0, cut);
  if (!kind || !hasKey("actor." + kind)) return actor;
  const id = actor.slice(cut + 1);
  return t("actor." + kind, { id: kind === "worker" && names.worker ? names.worker(id) : id });
}
