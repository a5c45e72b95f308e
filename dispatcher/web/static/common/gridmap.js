// The grid map: an SVG drawn from the site's grid polygons (no map tiles), with markers.
const NS = "http://www.w3.org/2000/svg";

function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

// Equirectangular projection around the map's centre latitude, y pointing down.
function projection(grids, width, pad) {
  let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
  for (const g of grids) {
    for (const [lon, lat] of g.polygon) {
      minX = Math.min(minX, lon); maxX = Math.max(maxX, lon);
      minY = Math.min(minY, lat); maxY = Math.max(maxY, lat);
    }
  }
  const k = Math.cos((((minY + maxY) / 2) * Math.PI) / 180);
  const spanX = Math.max(1e-9, (maxX - minX) * k);
  const spanY = Math.max(1e-9, maxY - minY);
  const scale = (width - 2 * pad) / spanX;
  const height = spanY * scale + 2 * pad;
  const project = (lon, lat) => [pad + (lon - minX) * k * scale, pad + (maxY - lat) * scale];
  return { project, width, height };
}

// grids: [{id, polygon, ...}]; options: fill(g) -> colour, label(g) -> text,
// markers: [{lat, lon, kind, title}], highlight: grid id, onSelect(g).
export function drawGridMap(svg, grids, options = {}) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  if (!grids.length) return;
  const { project, width, height } = projection(grids, 400, 14);
  svg.setAttribute("viewBox", `0 0 ${width} ${height.toFixed(1)}`);
  svg.setAttribute("role", "img");
  for (const g of grids) {
    const points = g.polygon.map(([lon, lat]) => project(lon, lat).map((v) => v.toFixed(1)).join(","));
    const poly = el("polygon", {
      points: points.join(" "),
      class: "cell" + (options.highlight === g.id ? " highlight" : ""),
      fill: options.fill ? options.fill(g) : "#e8eef3",
      "data-grid": g.id,
    }, svg);
    el("title", {}, poly).textContent = options.title ? options.title(g) : g.id;
    if (options.onSelect) {
      poly.addEventListener("click", () => options.onSelect(g));
      poly.classList.add("clickable");
    }
    const xs = g.polygon.map(([lon, lat]) => project(lon, lat));
    const cx = xs.reduce((a, p) => a + p[0], 0) / xs.length;
    const cy = xs.reduce((a, p) => a + p[1], 0) / xs.length;
    const label = options.label ? options.label(g) : g.id;
    String(label).split("\n").forEach((line, i, all) => {
      const text = el("text", {
        x: cx.toFixed(1), y: (cy + (i - (all.length - 1) / 2) * 15).toFixed(1),
        class: i === 0 ? "cell-label" : "cell-count", "text-anchor": "middle",
        "dominant-baseline": "middle",
      }, svg);
      text.textContent = line;
    });
  }
  for (const m of options.markers || []) {
    const [x, y] = project(m.lon, m.lat);
    const g = el("g", { class: "marker " + (m.kind || "") }, svg);
    el("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: m.kind === "me" ? 6 : 9 }, g);
    if (m.title) el("title", {}, g).textContent = m.title;
  }
}
