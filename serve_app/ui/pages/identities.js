// A recognition service's identities of unknown faces: each with its best shot, sightings and when
// it was seen (paged, the most recently seen first); an identity's sightings as thumbnails of their
// crops (paged). The identity shown can be promoted to a subject (its best shots enrolled), take in
// another identity (merge: picked from the list or by id), give chosen sightings to a new identity
// (split), or be ignored. Every change is asked for confirmation and goes through the recognition API.
import { api, imageUrl, query } from '../api.js';
import { attempt, load, onLeave } from '../app.js';
import { button, field, h, input } from '../dom.js';
import { pager, serviceHeader } from './common.js';

const IDENTITIES_PER_PAGE = 24;
const SIGHTINGS_PER_PAGE = 24;
const PROMOTED_FACES = 5;

const when = (iso) => new Date(iso).toLocaleString();
const counted = (count, noun) => `${count} ${noun}${count === 1 ? '' : 's'}`;

export async function render(serviceId) {
  const { header } = await serviceHeader(serviceId, 'Unknown faces');
  // identity: the one shown; chosen: ids of its sightings chosen to split off (kept across its pages)
  const state = { page: 0, list: null, identity: null, sightingPage: 0, chosen: new Set() };
  const crops = new Map();  // sighting id -> promise of a blob: URL (fetched once while on the page)
  onLeave(() => crops.forEach((pending) => pending.then((url) => URL.revokeObjectURL(url), () => {})));
  const listBox = h('section', { 'aria-label': 'identities', id: 'identities' });
  const detailBox = h('section', { 'aria-label': 'sightings', id: 'sightings' });
  const call = (path, options = {}) => api(`/api/v1/recognition/identities${path}`, { ...options, service: serviceId });

  function crop(sightingId, alt) {
    const img = h('img', { alt, width: 112, height: 112 });
    if (!crops.has(sightingId)) {
      crops.set(sightingId, imageUrl(`/api/v1/recognition/sightings/${encodeURIComponent(sightingId)}/img`, serviceId));
    }
    crops.get(sightingId)
      .then((url) => { img.src = url; })
      .catch((error) => { crops.delete(sightingId); img.alt = `crop unavailable: ${error.message}`; });
    return img;
  }

  function show(identity) {
    state.identity = identity;
    state.sightingPage = 0;
    state.chosen = new Set();
    renderIdentities();
    loadSightings();
  }

  async function loadIdentities() {
    const data = await load(() => call(`?${query({ page: state.page, size: IDENTITIES_PER_PAGE })}`));
    if (!data) return;
    state.list = data;
    renderIdentities();
  }

  function renderIdentities() {
    const data = state.list;
    if (data === null) return;
    const shown = state.identity;
    const items = data.identities.map((identity) => h('figure', { 'data-identity': identity.id, class: shown?.id === identity.id ? 'shown' : null },
      crop(identity.best_sighting, `best shot of identity ${identity.id}`),
      h('figcaption', {}, h('strong', {}, `#${identity.id}`), ` · ${counted(identity.sightings, 'sighting')}`,
        h('br'), h('span', { class: 'muted' }, `last seen ${when(identity.last_seen)}`)),
      button('Sightings', () => show(identity), { class: 'secondary', 'aria-label': `Sightings of identity ${identity.id}` }),
      shown && shown.id !== identity.id
        ? button(`Merge into #${shown.id}`, () => merge(identity.id), { class: 'secondary', 'aria-label': `Merge identity ${identity.id} into identity ${shown.id}` })
        : null));
    listBox.replaceChildren(h('h2', {}, 'Identities'),
      items.length ? h('div', { class: 'thumbs' }, items) : h('p', { class: 'muted' }, 'No unknown face remembered yet (recognize with remember_unknowns=true).'),
      pager('Identities', state.page, IDENTITIES_PER_PAGE, data.total_elements, (p) => { state.page = p; loadIdentities(); }));
  }

  // The sightings of identity `other` join the identity shown; `other` ceases to exist.
  async function merge(other) {
    const keep = state.identity;
    if (!confirm(`Merge identity #${other} into #${keep.id}? Its sightings join #${keep.id}, and #${other} ceases to exist.`)) return;
    const merged = await attempt(() => call(`/${keep.id}/merge`, { method: 'POST', body: { identity: other } }),
      `Identity #${other} merged into #${keep.id}.`);
    if (merged) { show(merged); loadIdentities(); }
  }

  // The chosen sightings of the identity shown become a new identity, which is then shown.
  async function split() {
    const identity = state.identity;
    const ids = [...state.chosen];
    if (!confirm(`Move ${counted(ids.length, 'sighting')} of identity #${identity.id} into a new identity?`)) return;
    const done = await attempt(() => call(`/${identity.id}/split`, { method: 'POST', body: { sighting_ids: ids } }));
    if (!done) return;
    const created = await attempt(() => call(`/${done.identity}`),
      `${counted(ids.length, 'sighting')} of #${identity.id} now make the new identity #${done.identity}.`);
    if (created) show(created);
    loadIdentities();
  }

  function changes(identity) {
    const done = () => { state.identity = null; loadIdentities(); loadSightings(); };
    const promote = h('form', {
      id: 'promote-identity',
      onsubmit: async (event) => {
        event.preventDefault();
        const subject = event.target.subject.value.trim();
        if (await attempt(() => call(`/${identity.id}/promote`, { method: 'POST', body: { subject, faces: PROMOTED_FACES } }),
          `Identity ${identity.id} is now the subject "${subject}".`)) done();
      },
    }, field('Promote to subject', input('subject', { required: true, maxlength: 255 })), h('button', { type: 'submit' }, 'Promote'),
    button('Ignore', async () => {
      if (await attempt(() => call(`/${identity.id}/ignore`, { method: 'POST' }), `Identity ${identity.id} is ignored.`)) done();
    }, { class: 'secondary' }));
    const mergeForm = h('form', {
      id: 'merge-identity',
      onsubmit: (event) => { event.preventDefault(); merge(Number(event.target.other.value)); },
    }, field('Identity to merge into this one (id)', input('other', { type: 'number', min: 1, step: 1, required: true })),
    h('button', { type: 'submit' }, 'Merge'));
    const splitButton = button('', split, { id: 'split-identity' });
    const chosenChanged = () => {
      splitButton.disabled = state.chosen.size === 0;
      splitButton.textContent = state.chosen.size ? `Split off ${counted(state.chosen.size, 'sighting')}` : 'Split off chosen sightings';
    };
    chosenChanged();
    return { forms: [promote, mergeForm, h('p', { class: 'muted' }, 'Choose sightings below to move them into a new identity. ', splitButton)], chosenChanged };
  }

  async function loadSightings() {
    const identity = state.identity;
    if (identity === null) {
      detailBox.replaceChildren(h('p', { class: 'muted' }, 'Choose an identity to see its sightings.'));
      return;
    }
    const sightings = await load(() => call(`/${identity.id}/sightings?${query({ page: state.sightingPage, size: SIGHTINGS_PER_PAGE })}`));
    if (!sightings || state.identity !== identity) return;
    const { forms, chosenChanged } = changes(identity);
    const thumbs = sightings.map((sighting) => h('figure', { 'data-sighting': sighting.id },
      crop(sighting.id, `sighting ${sighting.id}`),
      h('figcaption', { class: 'muted' }, when(sighting.seen_at), h('br'), sighting.source),
      h('label', { class: 'choose' }, h('input', {
        type: 'checkbox',
        checked: state.chosen.has(sighting.id),
        'aria-label': `Choose sighting ${sighting.id}`,
        onchange: (event) => {
          if (event.target.checked) state.chosen.add(sighting.id); else state.chosen.delete(sighting.id);
          chosenChanged();
        },
      }), ' split off')));
    detailBox.replaceChildren(h('h2', { id: 'identity-title' }, `Identity #${identity.id}: ${counted(identity.sightings, 'sighting')}`),
      h('p', { class: 'muted' }, `first seen ${when(identity.first_seen)}, last seen ${when(identity.last_seen)}; sources: ${identity.sources.join(', ')}`),
      ...forms, h('div', { class: 'thumbs' }, thumbs),
      pager('Sightings', state.sightingPage, SIGHTINGS_PER_PAGE, identity.sightings, (p) => { state.sightingPage = p; loadSightings(); }));
  }

  await Promise.all([loadIdentities(), loadSightings()]);
  return h('div', {}, header, h('div', { class: 'split' }, listBox, detailBox));
}
