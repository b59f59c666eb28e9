// A service's request statistics per day as a chart, and (recognition) its index shards' state.
import { api } from '../api.js';
import { h, svg, table } from '../dom.js';
import { serviceHeader } from './common.js';

const DAYS = 30;

// Bars of requests per day (errors in red at their foot), the last DAYS days with traffic.
function chart(rows) {
  const days = new Map();
  for (const row of rows) {
    const day = days.get(row.day) || { requests: 0, errors: 0 };
    day.requests += row.requests;
    day.errors += row.errors;
    days.set(row.day, day);
  }
  const series = [...days.entries()].sort(([a], [b]) => a.localeCompare(b)).slice(-DAYS);
  const width = 640, height = 200, bar = Math.min(48, width / Math.max(series.length, 1));
  const top = Math.max(1, ...series.map(([, d]) => d.requests));
  const figure = svg('svg', { viewBox: `0 0 ${width} ${height + 20}`, class: 'chart', role: 'img',
    'aria-label': `requests per day, ${series.length} days, at most ${top} a day` });
  series.forEach(([day, counts], i) => {
    const x = i * bar + 2, w = Math.max(1, bar - 4);
    const rh = (counts.requests / top) * height, eh = (counts.errors / top) * height;
    figure.append(svg('rect', { x, y: height - rh, width: w, height: rh, class: 'requests' }, `${day}: ${counts.requests} requests`));
    figure.append(svg('rect', { x, y: height - eh, width: w, height: eh, class: 'errors' }));
    figure.append(svg('text', { x, y: height + 14 }, day.slice(5)));
  });
  return figure;
}

export async function render(serviceId) {
  const { service, header } = await serviceHeader(serviceId, 'Statistics');
  const stats = await api(`/api/v1/admin/services/${serviceId}/stats`);
  const page = h('div', {}, header,
    h('h2', {}, 'Requests per day'),
    stats.requests.length ? h('section', {}, chart(stats.requests)) : h('p', { class: 'muted' }, 'No request yet.'),
    stats.requests.length ? table(['Day', 'Endpoint', 'Requests', 'Errors'], stats.requests.slice(0, 100).map((r) => h('tr', {},
      h('td', {}, r.day), h('td', {}, r.endpoint), h('td', {}, String(r.requests)), h('td', {}, String(r.errors))))) : null);
  if (service.type === 'recognition') {
    const index = await api(`/api/v1/admin/services/${serviceId}/index`);
    page.append(h('h2', {}, `Index shards (${index.faces} faces)`),
      table(['Shard', 'Faces', 'Search', 'RAM (MB)', 'Details'], index.shards.map((s, i) => h('tr', { class: 'shard' },
        h('td', {}, String(s.shard ?? i)), h('td', {}, String(s.faces)), h('td', {}, String(s.search ?? '')),
        h('td', {}, (s.ram_bytes / 1e6).toFixed(1)),
        h('td', { class: 'muted' }, Object.entries(s).filter(([k]) => !['shard', 'faces', 'ram_bytes', 'search'].includes(k))
          .map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', '))))));
  }
  return page;
}
