// Charts drawn by uPlot: lines (metrics, RED), bars (log volume) and points
// (trace durations). A drag selects a time range (zoom) when `onSelect` is set.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { cssVar, onThemeChange } from "../theme";

/** One series of values aligned with the chart's x values. */
export interface ChartSeries {
  label: string;
  values: (number | null)[];
  color?: string;
}

/** What to draw. */
export interface ChartSpec {
  kind: "line" | "bars" | "points";
  /** Unix seconds. */
  xs: number[];
  series: ChartSeries[];
  height?: number;
  yFormat?: (v: number) => string;
  legend?: boolean;
  /** The x range to show (Unix seconds), e.g. the query's time range. */
  xRange?: [number, number];
  /** A dragged x range, in Unix seconds. */
  onSelect?: (fromS: number, toS: number) => void;
  /** A click near a point: series index (from 0) and point index. */
  onPick?: (series: number, index: number) => void;
}

const PALETTE = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16", "#f97316", "#6366f1"];

/** A palette colour for the i-th series. */
export const seriesColor = (i: number) => PALETTE[i % PALETTE.length];

/** A chart in `container` that follows its width and the theme. */
export class Chart {
  private plot: uPlot | null = null;
  private ro: ResizeObserver;
  private offTheme: () => void;

  constructor(
    private container: HTMLElement,
    private spec: ChartSpec,
  ) {
    this.ro = new ResizeObserver(() => {
      const w = this.width();
      if (this.plot && Math.abs(this.plot.width - w) > 1) this.plot.setSize({ width: w, height: this.height() });
    });
    this.ro.observe(container);
    this.offTheme = onThemeChange(() => this.draw());
    this.draw();
  }

  /** Draws new data. */
  update(spec: ChartSpec): void {
    this.spec = spec;
    this.draw();
  }

  /** Removes the chart. */
  destroy(): void {
    this.ro.disconnect();
    this.offTheme();
    this.plot?.destroy();
    this.plot = null;
  }

  private width() {
    return Math.max(200, this.container.clientWidth || 600);
  }

  private height() {
    return this.spec.height ?? 200;
  }

  private draw(): void {
    this.plot?.destroy();
    const s = this.spec;
    const axis = cssVar("--muted") || "#888";
    const grid = cssVar("--grid") || "rgba(128,128,128,0.15)";
    const fmt = s.yFormat ?? ((v: number) => String(v));
    const series: uPlot.Series[] = [
      {},
      ...s.series.map((x, i): uPlot.Series => {
        const color = x.color ?? seriesColor(i);
        const base: uPlot.Series = { label: x.label, stroke: color, value: (_u, v) => (v == null ? "–" : fmt(v)) };
        if (s.kind === "bars") {
          return { ...base, fill: color + "99", paths: uPlot.paths.bars!({ size: [0.9, 40] }), points: { show: false } };
        }
        if (s.kind === "points") {
          return { ...base, paths: () => null, points: { show: true, size: 7, stroke: color, fill: color + "aa" } };
        }
        return { ...base, width: 1.5, spanGaps: false, points: { show: false } };
      }),
    ];
    const opts: uPlot.Options = {
      width: this.width(),
      height: this.height(),
      series,
      legend: { show: s.legend ?? s.series.length > 0 },
      cursor: {
        drag: { x: !!s.onSelect, y: false, setScale: false },
        points: { show: s.kind !== "bars" },
      },
      scales: { x: s.xRange ? { time: true, range: () => s.xRange! } : { time: true } },
      axes: [
        { stroke: axis, grid: { stroke: grid }, ticks: { stroke: grid } },
        { stroke: axis, grid: { stroke: grid }, ticks: { stroke: grid }, size: 60, values: (_u, vals) => vals.map((v) => fmt(v)) },
      ],
      hooks: {
        setSelect: [
          (u) => {
            if (!s.onSelect || u.select.width < 3) return;
            const from = u.posToVal(u.select.left, "x");
            const to = u.posToVal(u.select.left + u.select.width, "x");
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
            s.onSelect(from, to);
          },
        ],
      },
    };
    const data = [s.xs, ...s.series.map((x) => x.values)] as uPlot.AlignedData;
    this.plot = new uPlot(opts, data, this.container);
    if (s.onPick) {
      const pick = s.onPick;
      this.plot.over.addEventListener("click", () => {
        const u = this.plot;
        if (!u) return;
        const idx = u.cursor.idx;
        if (idx == null) return;
        for (let i = 1; i < u.series.length; i++) {
          if ((u.data[i] as (number | null)[])[idx] != null) {
            pick(i - 1, idx);
            return;
          }
        }
      });
      this.plot.over.style.cursor = "pointer";
    }
  }
}
