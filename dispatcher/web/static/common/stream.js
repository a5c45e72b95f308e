// The live stream of both pages: server-sent events from /stream, read with fetch so the token
// travels in the Authorization header (never in a URL). Reconnects with a growing delay, and
// treats a connection silent for longer than the server's keepalive as dead.
const SILENCE_MS = 40000;
const MAX_DELAY_MS = 30000;

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// One "event: …\ndata: …" block as {event, data}.
export function parseSse(block) {
  const ev = { event: "message", data: "" };
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "event") ev.event = value;
    if (field === "data") ev.data += (ev.data ? "\n" : "") + value;
  }
  return ev;
}

// handlers: onEvent({event, data}), onOpen() after each (re)connection, onState("connecting" |
// "live" | "offline"), onUnauthorized() when the server refuses the token (the stream stops).
export class LiveStream {
  constructor(api, handlers) {
    this.api = api;
    this.handlers = handlers;
    this.gen = 0;
    this.ctrl = null;
  }

  // Each (re)start bumps the generation; an older loop notices and ends.
  start() {
    this.stop();
    this.run(this.gen);
  }

  stop() {
    this.gen += 1;
    const ctrl = this.ctrl;
    this.ctrl = null;
    if (ctrl) ctrl.abort();
  }

  state(mode) {
    if (this.handlers.onState) this.handlers.onState(mode);
  }

  async run(gen) {
    let delay = 1000;
    while (this.api.token && gen === this.gen) {
      const ctrl = new AbortController();
      this.ctrl = ctrl;
      let watchdog = null;
      const feed = () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => ctrl.abort(), SILENCE_MS);
      };
      this.state("connecting");
      try {
        feed();
        const r = await fetch("/stream", { headers: this.api.headers(), signal: ctrl.signal, cache: "no-store" });
        if (r.status === 401) {
          if (this.handlers.onUnauthorized) this.handlers.onUnauthorized();
          return;
        }
        if (!r.ok) throw new Error("stream answered " + r.status);
        this.state("live");
        delay = 1000;
        if (this.handlers.onOpen) this.handlers.onOpen();
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          feed();
          buf += value;
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            this.handlers.onEvent(parseSse(buf.slice(0, cut)));
            buf = buf.slice(cut + 2);
          }
        }
      } catch (e) {
        if (gen !== this.gen) return;
        console.info("live stream interrupted", e.name);
      } finally {
        clearTimeout(watchdog);
      }
      if (gen !== this.gen || !this.api.token) return;
      this.state(navigator.onLine ? "connecting" : "offline");
      await sleep(delay);
      delay = Math.min(MAX_DELAY_MS, delay * 2);
    }
  }
}
