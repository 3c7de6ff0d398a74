// The dashboard's Charts: small multiples of the last hour or day, a point a minute
// (GET /api/charts, then `charts:point` pushes), drawn with uPlot (web/vendor/uplot, a
// classic script defining the global `uPlot`, served from 'self' as the CSP wants). What
// is drawn is worked out in admin-charts-model.js; this module owns the figures, the
// 1 h / 24 h toggle (kept in the page's URL as charts=24h) and the plots' sizes.
//
// uPlot sets sizes and colours through element.style (the CSSOM), which a style-src
// 'self' policy allows; it writes labels and values as text.
import { h, say, setHidden, setText } from './dom.js';
import {
  CHARTS, chartData, formatChartValue, formatTick, isolatedIndexes, mergePoints, minuteOf, queryWithWindow,
  windowFromQuery, windowMinutes,
} from './admin-charts-model.js';

const PLOT_HEIGHT = 160;
// Counts are whole: their axis never steps by a fraction.
const WHOLE_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000];
// Series of queues and stages take these colours in turn (admin.css sets them, readable on the surface).
const PALETTE = ['--chart-1', '--chart-2', '--chart-3', '--chart-4', '--chart-5', '--chart-6'];
const FALLBACK = ['#3b5bdb', '#2b8a3e', '#b35c00', '#c2255c', '#0b7285', '#6741d9'];
const TONES = { accent: '--accent', success: '--success', warning: '--warning', danger: '--danger' };

/** The uPlot constructor, or null when its script did not load. */
export function plotFactory() {
  return typeof globalThis.uPlot === 'function' ? globalThis.uPlot : null;
}

function minuteLabel(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

/** `admin` holds ui, api and the session counter. */
export function createCharts(admin) {
  const { ui } = admin;
  const section = ui.charts.closest('section');
  const toggles = [...section.querySelectorAll('button[data-window]')];
  const figures = new Map(); // chart id -> { spec, body, unit, none, plot, key, last }
  let name = windowFromQuery(location.search);
  let points = [];
  let loads = 0; // a window switched while loading: the older answer is dropped
  let width = 0;
  let soFar = null; // the minute (epoch seconds) drawn so far (a partial point), if any

  function cssColor(variable, fallback) {
    return getComputedStyle(ui.charts).getPropertyValue(variable).trim() || fallback;
  }

  function seriesColor(series) {
    if (series.tone) return cssColor(TONES[series.tone], FALLBACK[0]);
    const i = series.group % PALETTE.length;
    return cssColor(PALETTE[i], FALLBACK[i]);
  }

  function buildFigures() {
    for (const spec of CHARTS) {
      const titleId = `chart-${spec.id}-title`;
      const f = {
        spec, plot: null, key: '', last: null,
        body: h('div', { className: 'chart-body' }),
        unit: h('span', { className: 'chart-unit' }),
        none: h('p', { className: 'chart-none', text: 'Nothing measured in this window.', hidden: true }),
      };
      f.figure = h('figure', { className: 'chart', 'data-testid': 'chart', dataset: { chart: spec.id }, 'aria-labelledby': titleId },
        h('figcaption', {}, h('h3', { id: titleId, text: spec.title }), f.unit), f.body, f.none);
      figures.set(spec.id, f);
    }
    ui.charts.replaceChildren(...[...figures.values()].map((f) => f.figure));
  }

  /** With the cursor off the plot, the legend shows the newest minute's figures. */
  function showNewest(u, f) {
    if (u.cursor.idx == null && f.last != null && u.legend.idx !== f.last) u.setLegend({ idx: f.last });
  }

  function options(f, drawn, plotWidth) {
    const muted = cssColor('--muted', '#5b6574');
    const line = cssColor('--border', '#e2e5ea');
    const whole = drawn.unit === 'per min' || drawn.unit === 'jobs';
    const axis = { stroke: muted, font: '11px system-ui, sans-serif', grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 } };
    return {
      width: plotWidth,
      height: PLOT_HEIGHT,
      // The toggle picks the window: no drag to zoom.
      cursor: { drag: { x: false, y: false, setScale: false } },
      legend: { live: true },
      scales: {
        x: { time: true },
        y: { range: (u, min, max) => globalThis.uPlot.rangeNum(0, max > 0 ? max : 1, 0.1, true) },
      },
      axes: [
        axis,
        {
          ...axis, size: 46, label: drawn.unit, labelSize: 14, labelFont: '11px system-ui, sans-serif',
          values: (u, splits) => splits.map(formatTick), ...(whole ? { incrs: WHOLE_STEPS } : {}),
        },
      ],
      series: [
        { label: 'Minute', value: (u, seconds) => (seconds == null ? '—' : minuteLabel(seconds) + (seconds === soFar ? ' (so far)' : '')) },
        ...drawn.series.map((s) => ({
          label: s.label,
          stroke: seriesColor(s),
          width: 1.5,
          // p50 dashed, p95 solid, the same colour for a queue's or stage's pair.
          ...(s.q === 'p50' ? { dash: [5, 4] } : {}),
          value: (u, v) => formatChartValue(v, drawn.unit),
          // A lone minute (gaps on both sides) is drawn as a dot, or it would not show.
          points: { size: 5, filter: (u, si, show) => (show ? null : isolatedIndexes(u.data[si])) },
        })),
      ],
      hooks: { setLegend: [(u) => showNewest(u, f)] },
    };
  }

  function drawChart(f, drawn) {
    f.last = drawn.last;
    setText(f.unit, drawn.unit);
    f.figure.dataset.series = String(drawn.series.length);
    const nothing = drawn.series.length === 0;
    setHidden(f.none, !nothing);
    setHidden(f.body, nothing);
    const key = JSON.stringify([drawn.unit, drawn.series]);
    if (nothing || key !== f.key) destroy(f);
    if (nothing) return;
    const plotWidth = Math.floor(f.body.clientWidth);
    if (plotWidth <= 0) return; // not laid out yet: the resize observer draws it
    const Plot = plotFactory();
    if (!f.plot) {
      f.plot = new Plot(options(f, drawn, plotWidth), drawn.data, f.body);
      f.key = key;
      // The canvas says nothing to a screen reader; the legend (a table) says it all.
      const wrap = f.plot.root.querySelector('.u-wrap');
      if (wrap) wrap.setAttribute('aria-hidden', 'true');
    } else {
      f.plot.setData(drawn.data);
      showNewest(f.plot, f);
    }
    f.figure.dataset.drawn = 'true';
  }

  function destroy(f) {
    if (f.plot) f.plot.destroy();
    f.plot = null;
    f.key = '';
    delete f.figure.dataset.drawn;
  }

  /** Draw every chart from the points held (the window's, as of now). */
  function draw() {
    const minutes = windowMinutes(name);
    const now = Date.now();
    points = mergePoints(points, [], minutes, now);
    const empty = points.length === 0;
    Object.assign(ui.charts.dataset, { window: name, points: String(points.length), newest: empty ? '' : points[points.length - 1].at });
    setHidden(ui.chartsEmpty, !empty);
    setHidden(ui.charts, empty);
    const newest = empty ? null : points[points.length - 1];
    soFar = newest && newest.partial === true ? minuteOf(newest.at) : null;
    ui.charts.dataset.partial = String(soFar != null);
    setText(ui.chartsAt, empty ? '' : `Newest minute ${minuteLabel(minuteOf(newest.at))}${soFar != null ? ' (so far)' : ''}`);
    if (empty) { for (const f of figures.values()) destroy(f); return; }
    if (!plotFactory()) {
      say(ui.chartsStatus, 'The chart library failed to load.', 'error');
      return;
    }
    for (const f of figures.values()) drawChart(f, chartData(f.spec, points, minutes, now));
  }

  function syncToggles() {
    for (const btn of toggles) btn.setAttribute('aria-pressed', String(btn.dataset.window === name));
  }

  async function load() {
    const gen = admin.session;
    const mine = ++loads;
    const minutes = windowMinutes(name);
    if (!points.length) say(ui.chartsStatus, 'Loading…');
    try {
      const data = await admin.api(`/api/charts?minutes=${minutes}`);
      if (gen !== admin.session || mine !== loads) return;
      // The answer's points win; those pushed meanwhile (newer than it) stay.
      points = mergePoints(points, data && Array.isArray(data.points) ? data.points : [], minutes);
      say(ui.chartsStatus, '');
      draw();
    } catch (err) {
      if (!err.quiet && mine === loads) say(ui.chartsStatus, `Could not load the charts: ${err.message}`, 'error');
    }
  }

  /** A `charts:point` push: one more minute, or the minute so far (`partial`). */
  function onPoint(point) {
    if (!point || typeof point.at !== 'string') return;
    points = mergePoints(points, [point], windowMinutes(name));
    draw();
  }

  function setWindow(next) {
    if (next === name) return;
    name = next;
    const query = queryWithWindow(location.search, name);
    if (query !== location.search) history.replaceState(history.state, '', `${location.pathname}${query}${location.hash}`);
    syncToggles();
    draw(); // the narrower window at once; a wider one when its points arrive
    load();
  }

  /** Plots follow their figure's width (the grid reflows with the page). */
  function resize() {
    const now = Math.floor(ui.charts.clientWidth);
    if (now === width) return;
    width = now;
    if (!width) return;
    let missing = false;
    for (const f of figures.values()) {
      if (f.plot) f.plot.setSize({ width: Math.floor(f.body.clientWidth), height: PLOT_HEIGHT });
      else if (!f.body.hidden) missing = true;
    }
    if (missing && points.length) draw();
  }

  function listen() {
    buildFigures();
    syncToggles();
    for (const btn of toggles) btn.addEventListener('click', () => setWindow(btn.dataset.window));
    if (typeof ResizeObserver === 'function') {
      let frame = 0;
      new ResizeObserver(() => {
        cancelAnimationFrame(frame);
        frame = requestAnimationFrame(resize);
      }).observe(ui.charts);
    }
  }

  function reset() {
    loads += 1;
    points = [];
    for (const f of figures.values()) destroy(f);
    delete ui.charts.dataset.newest;
    delete ui.charts.dataset.partial;
    soFar = null;
    setHidden(ui.chartsEmpty, true);
    setText(ui.chartsAt, '');
    say(ui.chartsStatus, '');
  }

  return { listen, load, onPoint, reset };
}
