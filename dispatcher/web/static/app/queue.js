// Worker actions that survive a flaky connection: kept in IndexedDB, sent in order, retried
// with backoff until the server answers. A definite refusal (4xx) drops the action and is
// reported; "no answer" (offline, timeout, 5xx) keeps it for the next try.
import { ApiError, NetworkError } from "/static/common/api.js";

const DB = "gridwatch-app";
const STORE = "actions";

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE, { keyPath: "id", autoIncrement: true });
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function tx(mode, fn) {
  const db = await openDb();
  return new Promise((resolve, reject) => {
    const t = db.transaction(STORE, mode);
    const result = fn(t.objectStore(STORE));
    t.oncomplete = () => { db.close(); resolve(result && "result" in result ? result.result : result); };
    t.onerror = () => { db.close(); reject(t.error); };
  });
}

export class ActionQueue {
  // send(action) performs the request; events: onChange(count), onDone(action, result),
  // onFailed(action, error), onAuth() when the server wants a new login.
  constructor(send, handlers) {
    this.send = send;
    this.h = handlers;
    this.busy = false;
    this.backoff = 0;
    this.timer = null;
  }

  async add(action) {
    action.createdAt = new Date().toISOString();
    action.tries = 0;
    await tx("readwrite", (s) => s.add(action));
    await this.changed();
    this.flush();
  }

  async all() {
    return (await tx("readonly", (s) => s.getAll())) || [];
  }

  async clear() {
    await tx("readwrite", (s) => s.clear());
    await this.changed();
  }

  async changed() {
    this.h.onChange((await this.all()).length);
  }

  schedule(ms) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.flush(), ms);
  }

  async flush() {
    if (this.busy) return;
    this.busy = true;
    try {
      for (;;) {
        const pending = await this.all();
        if (!pending.length) { this.backoff = 0; break; }
        const action = pending[0];
        try {
          const result = await this.send(action);
          await tx("readwrite", (s) => s.delete(action.id));
          this.backoff = 0;
          this.h.onDone(action, result);
        } catch (err) {
          const retry = err instanceof NetworkError ||
            (err instanceof ApiError && (err.status >= 500 || err.status === 408 || err.status === 429));
          if (err instanceof ApiError && err.status === 401) {
            this.h.onAuth();
            break;
          }
          if (retry) {
            action.tries += 1;
            action.lastError = String(err.message || err);
            await tx("readwrite", (s) => s.put(action));
            this.backoff = Math.min(60000, this.backoff ? this.backoff * 2 : 2000);
            this.schedule(this.backoff);
            break;
          }
          await tx("readwrite", (s) => s.delete(action.id));
          this.h.onFailed(action, err);
        }
        await this.changed();
      }
    } finally {
      this.busy = false;
      await this.changed();
    }
  }
}
