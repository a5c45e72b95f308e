// Translations: zh-CN (default) and en, from /static/i18n/<lang>.json.
// t(key, vars) looks a key up; a missing key is recorded in window.gwMissingKeys (the browser
// tests fail on any) and shown as the key itself in brackets, so it is visible on screen.
export const LANGS = ["zh-CN", "en"];
const STORE_KEY = "gw.lang";
let dict = {};
let lang = "zh-CN";
window.gwMissingKeys = window.gwMissingKeys || [];

export function currentLang() {
  return lang;
}

export function t(key, vars) {
  let text = dict[key];
  if (text === undefined) {
    if (!window.gwMissingKeys.includes(lang + ":" + key)) {
      window.gwMissingKeys.push(lang + ":" + key);
      console.warn("missing translation", lang, key);
    }
    return "⟦" + key + "⟧";
  }
  if (vars) {
    text = text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  }
  return text;
}

// For values the server may extend (e.g. close reasons): the translation, else the raw value.
export function tOr(key, fallback, vars) {
  return key in dict ? t(key, vars) : fallback;
}

// Whether the current dictionary has a key (for text with a fallback of its own).
export function hasKey(key) {
  return key in dict;
}

export function applyI18n(root = document) {
  root.querySelectorAll("[data-i18n]").forEach((el) => {
    el.textContent = t(el.dataset.i18n);
  });
  root.querySelectorAll("[data-i18n-placeholder]").forEach((el) => {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  });
  root.querySelectorAll("[data-i18n-title]").forEach((el) => {
    el.title = t(el.dataset.i18nTitle);
  });
  root.querySelectorAll("[data-i18n-aria]").forEach((el) => {
    el.setAttribute("aria-label", t(el.dataset.i18nAria));
  });
}

export async function loadLang(wanted) {
  const chosen = LANGS.includes(wanted) ? wanted : storedLang();
  const r = await fetch("/static/i18n/" + chosen + ".json", { cache: "no-cache" });
  if (!r.ok) throw new Error("cannot load translations " + chosen);
  dict = await r.json();
  lang = chosen;
  localStorage.setItem(STORE_KEY, chosen);
  document.documentElement.lang = chosen;
  applyI18n();
  return chosen;
}

export function storedLang() {
  const saved = localStorage.getItem(STORE_KEY);
  return LANGS.includes(saved) ? saved : "zh-CN";
}

export function otherLang() {
  return lang === "zh-CN" ? "en" : "zh-CN";
}

// A site label in the current language: {name, name_en} or {label, label_en}.
export function siteLabel(item, field = "name") {
  if (!item) return "";
  return lang === "en" ? item[field + "_en"] || item[field] : item[field];
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  const s = Math.round(Math.abs(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return t("time.dh", { d, h });
  if (h > 0) return t("time.hm", { h, m });
  if (m > 0) return t("time.m", { m });
  return t("time.s", { s });
}

// Times are shown in the site's time zone (set once the site is known), whatever the device's.
let timeZone;

export function setTimeZone(tz) {
  timeZone = tz;
}

export function formatTime(iso) {
  if (!iso) return "–";
  const at = new Date(iso);
  return at.toLocaleString(lang, {
    month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false, timeZone,
  });
}

export function formatClock(at = new Date()) {
  return at.toLocaleTimeString(lang, { hour12: false, timeZone });
}

export function formatPercent(x) {
  return x === null || x === undefined ? "–" : Math.round(x * 100) + "%";
}
