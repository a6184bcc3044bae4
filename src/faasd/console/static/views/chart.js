// SVG charts for the metrics history: bars (stacked) and lines over time, drawn by hand.
import { h, s } from "../lib.js";

const W = 640, H = 150, L = 44, R = 10, T = 12, B = 22;

function axes(maxY, t0, t1, unit) {
  const g = s("g", { class: "axes" });
  for (let i = 0; i <= 4; i++) {
    const y = T + (H - T - B) * (1 - i / 4);
    g.append(s("line", { x1: L, x2: W - R, y1: y, y2: y, class: "gridline" }));
    const v = (maxY * i) / 4;
    g.append(s("text", { x: L - 4, y: y + 3, "text-anchor": "end" }, v >= 10 ? Math.round(v) : v.toFixed(1)));
  }
  g.append(s("text", { x: L, y: H - 6 }, new Date(t0 * 1000).toLocaleTimeString()));
  g.append(s("text", { x: W - R, y: H - 6, "text-anchor": "end" }, new Date(t1 * 1000).toLocaleTimeString()));
  g.append(s("text", { x: 4, y: T - 2, class: "unit" }, unit));
  return g;
}

function legend(items) {
  return h("div", { class: "legend" }, items.map(([name, cls]) => h("span", {}, h("i", { class: cls }), name)));
}

function frame(points) {
  const t0 = points.length ? points[0].t : Date.now() / 1000 - 60;
  const t1 = points.length ? points[points.length - 1].t : Date.now() / 1000;
  const x = (t) => L + ((W - L - R) * (t - t0)) / Math.max(1, t1 - t0);
  return { t0, t1, x };
}

export function stackedBars(title, points, series, unit = "per interval") {
  const { t0, t1, x } = frame(points);
  const maxY = Math.max(1, ...points.map((p) => series.reduce((a, [k]) => a + (p[k] || 0), 0)));
  const y = (v) => T + (H - T - B) * (1 - v / maxY);
  const bw = Math.max(1.5, ((W - L - R) / Math.max(1, points.length)) * 0.8);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title }, axes(maxY, t0, t1, unit));
  for (const p of points) {
    let acc = 0;
    for (const [k, cls] of series) {
      const v = p[k] || 0;
      if (v > 0) svg.append(s("rect", { x: x(p.t) - bw / 2, y: y(acc + v), width: bw, height: y(acc) - y(acc + v), class: cls },
        s("title", {}, `${k}: ${v}`)));
      acc += v;
    }
  }
  return h("figure", { class: "chartbox" }, h("figcaption", {}, title), svg, legend(series.map(([k, c]) => [k, c])));
}

export function lines(title, points, series, unit = "ms") {
  const { t0, t1, x } = frame(points);
  const vals = points.flatMap((p) => series.map(([k]) => p[k]).filter((v) => v !== null && v !== undefined));
  const maxY = Math.max(1, ...vals) * 1.1;
  const y = (v) => T + (H - T - B) * (1 - v / maxY);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title }, axes(maxY, t0, t1, unit));
  for (const [k, cls] of series) {
    const pts = points.filter((p) => p[k] !== null && p[k] !== undefined);
    if (!pts.length) continue;
    svg.append(s("polyline", { points: pts.map((p) => `${x(p.t).toFixed(1)},${y(p[k]).toFixed(1)}`).join(" "), class: `line ${cls}` }));
    for (const p of pts) svg.append(s("circle", { cx: x(p.t), cy: y(p[k]), r: 2.2, class: `dot ${cls}` }, s("title", {}, `${k}: ${p[k]} ms`)));
  }
  return h("figure", { class: "chartbox" }, h("figcaption", {}, title), svg, legend(series.map(([k, c]) => [k, c])));
}

export function metricsCharts(history) {
  const pts = history.points.slice(-150);
  return h("div", { class: "charts", "data-test": "charts" },
    stackedBars("Invocations and errors", pts.map((p) => ({ ...p, ok: Math.max(0, p.invocations - p.errors) })),
      [["ok", "c-ok"], ["errors", "c-err"]], `per ${history.interval_s} s`),
    lines("Latency percentiles", pts, [["p50_ms", "c-p50"], ["p90_ms", "c-p90"], ["p99_ms", "c-p99"]]),
    stackedBars("Cold vs warm starts", pts, [["warm", "c-warm"], ["cold", "c-cold"]], `per ${history.interval_s} s`));
}
