// The Drills tab's extras, served by the Locust web UI itself (no CDN): the fault buttons
// and small charts of queue depth, in flight, accepted and lost over the run, drawn as
// inline SVG from ./drills/history.json. Both sit in the page's flow, above the figures
// table, so they never cover its values (a fixed bar did).
(function () {
  const kinds = __KINDS__;
  const series = __SERIES__;
  const SVG = 'http://www.w3.org/2000/svg';
  const W = 220, H = 60, PAD = 2;
  let history = null;

  function drillsTable() {
    for (const table of document.querySelectorAll('table')) {
      if (table.textContent.includes('in flight')) return table;
    }
    return null;
  }

  function faultBar() {
    const bar = document.createElement('div');
    bar.id = 'drill-faults';
    bar.style.cssText = 'margin:8px 0;padding:8px;background:#222;color:#fff;' +
      'border-radius:6px;font:13px sans-serif';
    bar.appendChild(document.createTextNode('Inject a fault: '));
    const out = document.createElement('span');
    out.id = 'drill-fault-result';
    out.style.marginLeft = '6px';
    for (const kind of kinds) {
      const b = document.createElement('button');
      b.id = 'drill-fault-' + kind; b.textContent = kind; b.style.margin = '0 3px';
      b.onclick = async () => {
        out.textContent = kind + '...';
        const token = document.querySelector('meta[name="taskq-drills-token"]').content;
        const r = await fetch('./drills/fault/' + kind,
                              {method: 'POST', headers: {'X-Drills-Token': token}});
        const body = await r.json();
        out.textContent = r.ok ? (body.kind + ' ' + body.target + ' pid ' + body.pid)
                               : ('refused: ' + body.error);
      };
      bar.appendChild(b);
    }
    bar.appendChild(out);
    return bar;
  }

  function chart(name) {
    const fig = document.createElement('figure');
    fig.className = 'drill-chart';
    fig.dataset.series = name;
    fig.style.cssText = 'margin:0;padding:4px 8px;border:1px solid #888;border-radius:4px;' +
      'font:12px sans-serif';
    const caption = document.createElement('figcaption');
    caption.textContent = name + ': -';
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('width', String(W));
    svg.setAttribute('height', String(H));
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', name + ' over the run');
    const line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', 'currentColor');
    line.setAttribute('stroke-width', '1.5');
    svg.appendChild(line);
    fig.appendChild(caption);
    fig.appendChild(svg);
    return fig;
  }

  function draw(fig, t, values) {
    const name = fig.dataset.series;
    // A sample Redis did not answer is a gap, not a zero.
    const known = [];
    values.forEach((v, i) => { if (v !== null) known.push([t[i], v]); });
    const line = fig.querySelector('polyline');
    const last = known.length ? known[known.length - 1][1] : null;
    fig.querySelector('figcaption').textContent = name + ': ' + (last === null ? '-' : last);
    fig.dataset.points = String(known.length);
    fig.dataset.last = last === null ? '' : String(last);
    if (!known.length) { line.setAttribute('points', ''); return; }
    const t0 = t[0], span = Math.max(t[t.length - 1] - t0, 1);
    const top = known.reduce((m, p) => Math.max(m, p[1]), 1);
    fig.dataset.max = String(top);
    fig.querySelector('figcaption').textContent =
      name + ': ' + last + ' (max ' + top + ', ' + Math.round(span) + ' s)';
    const points = known.map(([x, y]) =>
      (PAD + (x - t0) / span * (W - 2 * PAD)).toFixed(1) + ',' +
      (H - PAD - y / top * (H - 2 * PAD)).toFixed(1));
    line.setAttribute('points', points.join(' '));
  }

  function extras() {
    const box = document.createElement('div');
    box.id = 'drill-tab';
    box.appendChild(faultBar());
    const charts = document.createElement('div');
    charts.id = 'drill-charts';
    charts.style.cssText = 'display:flex;flex-wrap:wrap;gap:8px;margin:8px 0';
    for (const name of series) charts.appendChild(chart(name));
    box.appendChild(charts);
    return box;
  }

  function place() {
    let box = document.getElementById('drill-tab');
    const onTab = new URLSearchParams(location.search).get('tab') === 'drills';
    const table = onTab ? drillsTable() : null;
    if (!table) { if (box) box.style.display = 'none'; return; }
    if (!box) box = extras();
    const anchor = table.closest('.MuiTableContainer-root') || table;
    if (box.nextSibling !== anchor) anchor.parentElement.insertBefore(box, anchor);
    box.style.display = 'block';
    if (history) {
      for (const fig of box.querySelectorAll('.drill-chart')) {
        draw(fig, history.t, history.series[fig.dataset.series] || []);
      }
    }
  }

  async function refresh() {
    try {
      const answer = await fetch('./drills/history.json');
      if (answer.ok) history = await answer.json();
    } catch (e) { /* the next round asks again */ }
  }

  refresh();
  setInterval(refresh, 2000);
  setInterval(place, 500);
})();
