// Service worker of the worker app: keeps the app shell so it opens with no network, and
// installs to the home screen. API calls are never cached (tickets must be current); the
// action queue in IndexedDB covers writes made offline.
const CACHE = "gridwatch-app-v3";
const SHELL = [
  "/app/",
  "/app/index.html",
  "/app/app.js",
  "/app/queue.js",
  "/app/app.css",
  "/app/manifest.webmanifest",
  "/app/icons/icon.svg",
  "/app/icons/icon-192.png",
  "/app/icons/icon-512.png",
  "/static/common/base.css",
  "/static/common/i18n.js",
  "/static/common/api.js",
  "/static/common/audit.js",
  "/static/common/errors.js",
  "/static/common/gridmap.js",
  "/static/common/stream.js",
  "/static/i18n/zh-CN.json",
  "/static/i18n/en.json",
];
const NETWORK_WAIT_MS = 3000;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

// Network first (fresh after a deploy), the cached copy when the network is slow or away.
async function shell(request) {
  const cache = await caches.open(CACHE);
  const network = fetch(request).then((response) => {
    if (response.ok) cache.put(request, response.clone());
    return response;
  });
  const timeout = new Promise((resolve) => setTimeout(resolve, NETWORK_WAIT_MS));
  try {
    const first = await Promise.race([network, timeout]);
    if (first) return first;
  } catch (e) {
    // offline: fall through to the cache
  }
  const cached = await cache.match(request, { ignoreSearch: true });
  if (cached) return cached;
  return network;
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  if (url.pathname.startsWith("/app/") || url.pathname.startsWith("/static/")) {
    event.respondWith(shell(event.request));
  }
});
