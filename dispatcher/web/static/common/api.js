// The JSON API client of both pages: bearer token in a header, clear errors.
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

// No answer at all (offline, connection dropped, server unreachable).
export class NetworkError extends Error {}

export class Api {
  constructor(storeKey) {
    this.storeKey = storeKey;
    this.onUnauthorized = () => {};
  }

  get session() {
    try {
      return JSON.parse(localStorage.getItem(this.storeKey) || "null");
    } catch (e) {
      return null;
    }
  }

  set session(value) {
    if (value) localStorage.setItem(this.storeKey, JSON.stringify(value));
    else localStorage.removeItem(this.storeKey);
  }

  get token() {
    const s = this.session;
    if (!s) return null;
    if (new Date(s.expires_at).getTime() <= Date.now()) return null;
    return s.access_token;
  }

  headers(extra = {}) {
    const h = { ...extra };
    const token = this.token;
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  async request(path, { method = "GET", json, form, signal, raw = false } = {}) {
    const init = { method, headers: this.headers(), signal, cache: "no-store" };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (form !== undefined) {
      init.body = form;
    }
    let r;
    try {
      r = await fetch(path, init);
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new NetworkError(String(e));
    }
    if (r.status === 401) {
      this.session = null;
      this.onUnauthorized();
    }
    if (!r.ok) {
      let detail = r.statusText;
      try {
        const body = await r.json();
        if (typeof body.detail === "string") detail = body.detail;
        else if (Array.isArray(body.detail)) detail = body.detail.map((e) => e.msg).join("; ");
        else detail = JSON.stringify(body.detail);
      } catch (e) {
        // not JSON: keep the status text
      }
      throw new ApiError(r.status, detail);
    }
    if (raw) return r;
    if (r.status === 204) return null;
    return r.json();
  }

  get(path, opts) {
    return this.request(path, opts);
  }

  post(path, json) {
    return this.request(path, { method: "POST", json });
  }

  async login(username, password) {
    const s = await this.request("/auth/login", { method: "POST", json: { username, password } });
    this.session = s;
    return s;
  }

  async logout() {
    try {
      await this.request("/auth/logout", { method: "POST" });
    } finally {
      this.session = null;
    }
  }

  // An image the API serves behind the token, as an object URL for <img src>.
  async imageUrl(path) {
    const r = await this.request(path, { raw: true });
    return URL.createObjectURL(await r.blob());
  }
}

export function qs(params) {
  const out = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => out.append(k, x));
    else out.append(k, v);
  }
  const s = out.toString();
  return s ? "?" + s : "";
}
