// Signs a request as one hop signs its call to the next (docs/request-flow.md#signed-hops), for
// the .http files that call payment or shipment directly. Used from a `{{@request}}` block, which
// httpyac runs on every request of the file once its variables are replaced:
//
//   require('./sign-hop.js')(request, hop_secret, hop_key_id)
//
// Without a secret (the httpyac variable `hop_secret` unset or empty) it leaves the request
// alone: the services only check signatures when their HOP_SECRET is set.
const crypto = require('crypto');

module.exports = function signHop(request, secret, keyId) {
  if (!secret) return;
  keyId = keyId || 'k1';
  const url = new URL(request.url);
  const headers = request.headers || (request.headers = {});
  const name = Object.keys(headers).find((h) => h.toLowerCase() === 'idempotency-key');
  const key = name ? String(headers[name]).trim() : '';
  const body = request.body === undefined || request.body === null ? '' : request.body;
  const timestamp = String(Math.floor(Date.now() / 1000));
  const lines = [
    'saga-hop-v1',
    keyId,
    timestamp,
    request.method.toUpperCase(),
    url.pathname + url.search,
    key,
    crypto.createHash('sha256').update(body).digest('hex'),
  ];
  headers['X-Hop-Key-Id'] = keyId;
  headers['X-Hop-Timestamp'] = timestamp;
  headers['X-Hop-Signature'] = crypto.createHmac('sha256', secret).update(lines.join('\n')).digest('hex');
};
