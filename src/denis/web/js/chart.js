// A small time-series line chart drawn by hand on a <canvas> (no library, works offline):
// the last `capacity` samples of one or more series, a y axis from 0 to a rounded maximum,
// and a legend. Drawing is batched into one animation frame, so a burst of samples costs one
// paint. Colours come from CSS custom properties at every draw (a series' `color` may name one,
// e.g. "--chart-rtt", so each theme sets its own), and the chart redraws when the system's
// light/dark setting changes. The canvas is decoration for sighted users; the caller keeps a
// text summary next to it for screen readers.

export class LineChart {
  constructor(canvas, series, { capacity = 60 } = {}) {
    this.canvas = canvas;
    this.series = series.map((s) => ({ ...s, points: [] })); // {name, color}
    this.capacity = capacity;
    this.pending = false;
    if (typeof ResizeObserver === "function") {
      new ResizeObserver(() => this.requestDraw()).observe(canvas);
    }
    if (typeof window.matchMedia === "function") {
      const scheme = window.matchMedia("(prefers-color-scheme: dark)");
      if (typeof scheme.addEventListener === "function") {
        scheme.addEventListener("change", () => this.requestDraw());
      }
    }
  }

  add(name, value, at = Date.now()) {
    const series = this.series.find((s) => s.name === name);
    if (!series || !Number.isFinite(value)) return;
    series.points.push({ at, value });
    if (series.points.length > this.capacity) series.points.shift();
    this.requestDraw();
  }

  latest(name) {
    const series = this.series.find((s) => s.name === name);
    const last = series && series.points[series.points.length - 1];
    return last ? last.value : null;
  }

  requestDraw() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const ratio = window.devicePixelRatio || 1;
    const width = this.canvas.clientWidth;
    const height = this.canvas.clientHeight;
    if (width === 0 || height === 0) return;
    this.canvas.width = Math.round(width * ratio);
    this.canvas.height = Math.round(height * ratio);
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(this.canvas);
    const ink = style.getPropertyValue("--chart-ink").trim() || "#444";
    const grid = style.getPropertyValue("--chart-grid").trim() || "#ddd";
    const colour = (series) =>
      series.color.startsWith("--") ? style.getPropertyValue(series.color).trim() || ink : series.color;
    const pad = { left: 40, right: 8, top: 18, bottom: 6 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const all = this.series.flatMap((s) => s.points);
    const top = niceMax(Math.max(1, ...all.map((p) => p.value)));
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    for (const fraction of [0, 0.5, 1]) {
      const y = pad.top + plotH * (1 - fraction);
      ctx.strokeStyle = grid;
      ctx.beginPath();
      ctx.moveTo(pad.left, y);
      ctx.lineTo(width - pad.right, y);
      ctx.stroke();
      ctx.fillStyle = ink;
      ctx.textAlign = "right";
      ctx.fillText(formatValue(top * fraction), pad.left - 4, y);
    }
    let legendX = pad.left;
    for (const series of this.series) {
      const color = colour(series);
      ctx.fillStyle = color;
      ctx.fillRect(legendX, 4, 10, 3);
      ctx.fillStyle = ink;
      ctx.textAlign = "left";
      ctx.fillText(series.name, legendX + 14, 6);
      legendX += 24 + ctx.measureText(series.name).width;
      this.drawSeries(ctx, series, color, { pad, plotW, plotH, top });
    }
  }

  drawSeries(ctx, series, color, { pad, plotW, plotH, top }) {
    const points = series.points;
    if (points.length === 0) return;
    const step = plotW / Math.max(1, this.capacity - 1);
    const offset = this.capacity - points.length;
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach((point, index) => {
      const x = pad.left + (offset + index) * step;
      const y = pad.top + plotH * (1 - Math.min(point.value, top) / top);
      if (index === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
    ctx.lineWidth = 1;
    const last = points[points.length - 1]; // a dot on the newest sample, visible even alone
    const lastX = pad.left + (offset + points.length - 1) * step;
    const lastY = pad.top + plotH * (1 - Math.min(last.value, top) / top);
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.arc(lastX - 2, lastY, 3, 0, 2 * Math.PI);
    ctx.fill();
  }
}

function niceMax(value) {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const factor of [1, 2, 5, 10]) {
    if (value <= factor * magnitude) return factor * magnitude;
  }
  return 10 * magnitude;
}

function formatValue(value) {
  if (value >= 10000) return `${Math.round(value / 1000)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}
