// Video streams (owner and administrators): add, edit, state, stop and start, delete, and live events over
// Server-Sent Events.
import { api } from '../api.js';
import { attempt, load, onLeave } from '../app.js';
import { button, field, formData, h, input, select, table } from '../dom.js';
import { recognitionServices } from './common.js';

const REFRESH_MS = 3000;
const SHOWN_EVENTS = 50;

function eventItem(event) {
  return h('li', { 'data-event': event.id, 'data-stream': event.stream_id },
    event.crop_url ? h('img', { src: event.crop_url, alt: `best shot of event ${event.id}` }) : h('span', { class: 'muted' }, 'no image'),
    h('span', { class: event.unknown ? 'error subject' : 'ok subject' }, event.unknown ? 'unknown' : event.subject),
    event.unknown ? null : h('span', {}, `similarity ${event.similarity.toFixed(3)}`),
    h('span', { class: 'muted' }, `stream ${event.stream_id}, track ${event.track_id}, ${new Date(event.last_seen).toLocaleTimeString()}`));
}

// The settings of a stream that the add and edit forms share, filled from ``values``.
function streamFields(services, values) {
  return [field('Name', input('name', { maxlength: 255, value: values.name ?? '' })),
    field('Source (file path, rtsp://, http(s)://)', input('source_url', { required: true, value: values.source_url ?? '' })),
    field('Watchlist', select('watchlist_service_id', [['', 'none'], ...services.map((s) => [String(s.id), `${s.application} / ${s.name}`])],
      values.watchlist_service_id ? String(values.watchlist_service_id) : '')),
    field('Mode', select('mode', [['realtime', 'realtime'], ['overall', 'overall']], values.mode)),
    field('Detections per second', input('max_fps', { type: 'number', min: 0, step: 0.5, value: values.max_fps }))];
}

function streamBody(form) {
  const body = formData(form);
  body.max_fps = Number(body.max_fps);
  body.watchlist_service_id = body.watchlist_service_id ? Number(body.watchlist_service_id) : null;
  return body;
}

export async function render() {
  const services = await recognitionServices();
  const streamsBox = h('div', {});
  const editBox = h('div', {});
  function edit(stream) {
    const label = stream.name || `#${stream.id}`;
    editBox.replaceChildren(h('h2', {}, `Edit stream ${label}`), h('form', {
      class: 'card', id: 'edit-stream',
      onsubmit: async (event) => {
        event.preventDefault();
        const body = streamBody(event.target);
        if (body.source_url === stream.source_url) delete body.source_url; // shown with its credentials masked
        if (await attempt(() => api(`/api/v1/video/streams/${stream.id}`, { method: 'PATCH', body }), 'Stream saved.')) { editBox.replaceChildren(); loadStreams(); }
      },
    }, streamFields(services, stream), h('button', { type: 'submit' }, 'Save stream'),
    button('Cancel', () => editBox.replaceChildren(), { class: 'secondary' })));
    editBox.querySelector('input').focus();
  }
  async function loadStreams() {
    const streams = await load(() => api('/api/v1/video/streams'));
    if (!streams) return;
    streamsBox.replaceChildren(streams.length ? table(['Name', 'Source', 'State', 'FPS', 'Faces', 'Events', ''], streams.map((s) => h('tr', { 'data-stream': s.id },
      h('td', {}, s.name || `#${s.id}`), h('td', {}, s.source_url),
      h('td', { class: `state-${s.status.state}` }, s.status.reason ? `${s.status.state}: ${s.status.reason}` : s.status.state),
      h('td', {}, String(s.status.fps)), h('td', {}, String(s.status.faces)), h('td', {}, String(s.status.events)),
      h('td', { class: 'actions' }, button('Edit', () => edit(s), { class: 'secondary', 'aria-label': `Edit stream ${s.name || s.id}` }), button(s.enabled ? 'Stop' : 'Start', async () => {
        if (await attempt(() => api(`/api/v1/video/streams/${s.id}`, { method: 'PATCH', body: { enabled: !s.enabled } }), s.enabled ? 'Stream stopped.' : 'Stream started.')) loadStreams();
      }, { class: 'secondary', 'aria-label': `${s.enabled ? 'Stop' : 'Start'} stream ${s.name || s.id}` }), button('Delete', async () => {
        if (confirm(`Delete stream ${s.name || s.id} and its events?`) && await attempt(() => api(`/api/v1/video/streams/${s.id}`, { method: 'DELETE' }), 'Stream deleted.')) loadStreams();
      }, { class: 'danger', 'aria-label': `Delete stream ${s.name || s.id}` })))))
      : h('p', { class: 'muted' }, 'No stream.'));
  }
  const timer = setInterval(loadStreams, REFRESH_MS);
  onLeave(() => clearInterval(timer));

  const live = h('ul', { class: 'events', id: 'live-events', 'aria-live': 'polite' });
  const liveState = h('p', { class: 'muted', id: 'live-state' }, 'connecting…');
  const source = new EventSource('/api/v1/video/events/stream');
  source.onopen = () => { liveState.textContent = 'live'; };
  source.onerror = () => { liveState.textContent = 'reconnecting…'; };
  source.addEventListener('video_event', (message) => {
    live.prepend(eventItem(JSON.parse(message.data)));
    while (live.children.length > SHOWN_EVENTS) live.lastChild.remove();
  });
  onLeave(() => source.close());

  const recent = await api(`/api/v1/video/events?limit=${SHOWN_EVENTS}`);
  recent.forEach((event) => live.append(eventItem(event)));
  await loadStreams();
  return h('div', {}, h('h1', {}, 'Video streams'), streamsBox, editBox,
    h('h2', {}, 'Add a stream'),
    h('form', {
      class: 'card', id: 'add-stream',
      onsubmit: async (event) => {
        event.preventDefault();
        if (await attempt(() => api('/api/v1/video/streams', { method: 'POST', body: streamBody(event.target) }), 'Stream added.')) { event.target.reset(); loadStreams(); }
      },
    }, streamFields(services, { mode: 'realtime', max_fps: 5 }),
    h('button', { type: 'submit' }, 'Add stream')),
    h('h2', {}, 'Live events'), liveState, live);
}
