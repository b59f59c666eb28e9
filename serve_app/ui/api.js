// The platform's API as the UI calls it: the session cookie goes along by itself, changes carry the
// session's CSRF token, a service is named by x-service-id, and every error becomes an ApiError whose
// message is the API's own readable one.

let csrfToken = null;

export function setCsrfToken(token) {
  csrfToken = token;
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headersFor(method, service, extra = {}) {
  const headers = { ...extra };
  if (csrfToken && method !== 'GET') headers['x-csrf-token'] = csrfToken;
  if (service !== undefined) headers['x-service-id'] = String(service);
  return headers;
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.message) message = body.message;
  } catch (_) { /* not JSON */ }
  const retry = response.headers.get('retry-after');
  if (retry && !message.includes('try again in')) message += ` (try again in ${retry} s)`;
  return new ApiError(response.status, message);
}

export async function api(path, { method = 'GET', body, service, raw = false } = {}) {
  const extra = {};
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    extra['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, body: payload, headers: headersFor(method, service, extra), credentials: 'same-origin' });
  } catch (error) {
    throw new ApiError(0, `the server cannot be reached (${error.message})`);
  }
  if (!response.ok) throw await errorOf(response);
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

// An image the API serves only with the service header: fetched, then shown from a blob: URL.
export async function imageUrl(path, service) {
  const response = await api(path, { service, raw: true });
  return URL.createObjectURL(await response.blob());
}

// POST one file as multipart with upload progress (fetch has none): resolves with the JSON answer.
export function upload(path, file, { service, onProgress } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    for (const [name, value] of Object.entries(headersFor('POST', service))) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => { if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total); };
    xhr.onerror = () => reject(new ApiError(0, 'the server cannot be reached'));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, (body && body.message) || `${xhr.status} ${xhr.statusText}`));
    };
    const form = new FormData();
    form.append('file', file);
    xhr.send(form);
  });
}

export const query = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== '')).toString();
