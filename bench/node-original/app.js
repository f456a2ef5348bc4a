// The Node original that saga-breaker replaces, rebuilt to measure against
// (`scripts/measure.sh mongo-pg --node bench/node-original`). One file for all three services; the environment says which one this is:
//
//   ID=order    PORT=3000 CHAIN_SVC=http://127.0.0.1:3001/create MONGO_URL=mongodb://host/db node app.js
//   ID=payment  PORT=3001 CHAIN_SVC=http://127.0.0.1:3002/create MONGO_URL=... node app.js
//   ID=shipment PORT=3002 MONGO_URL=... node app.js        (no CHAIN_SVC: the last hop)
//
// POST /create?count=N: count = N + 1; at count >= JUMPS (6) the chain stops with
// {"status":"last","message":"Last"}. Otherwise the service saves ITS part with one mongoose
// save() (order the order, payment the payment, shipment the shipment), then POSTs the nested
// part (`payment` from order, `shipment` from payment) to CHAIN_SVC?count=<count> through an
// opossum breaker (timeout 300 ms, errorThresholdPercentage 50, resetTimeout 10000). The
// fallback answers 200 with status "degraded" and says why. INJECT_ERR=1 answers 502 at random
// (ERR_RATE, 0.4) after the save, like the original. GET / answers "hello from <ID>" and only
// once MongoDB is connected (the server listens after mongoose.connect).
//
// Answers carry "status": "completed" | "degraded" (a degraded next hop makes its caller
// degraded too) so `saga load` classifies them as it does saga-breaker's. Only the breaker's
// state changes (open, halfOpen, close) are logged: a line per call would measure console.log.
'use strict';

const express = require('express');
const mongoose = require('mongoose');
const CircuitBreaker = require('opossum');
const axios = require('axios');

const ID = process.env.ID || 'order';
const PORT = Number(process.env.PORT || 3000);
const CHAIN_SVC = process.env.CHAIN_SVC || '';
const MONGO_URL = process.env.MONGO_URL || 'mongodb://127.0.0.1:27017/saga';
const JUMPS = Number(process.env.JUMPS || 6);
const INJECT_ERR = ['1', 'true'].includes(process.env.INJECT_ERR || '0');
const ERR_RATE = Number(process.env.ERR_RATE || 0.4);

// Each service: the model it saves, how its part is read from the body, and the nested part it
// forwards (null: nothing to forward).
const SERVICES = {
  order: {
    model: 'Order',
    schema: { id: String, items: [mongoose.Schema.Types.Mixed] },
    next: (body) => body.payment,
  },
  payment: {
    model: 'Payment',
    schema: { id: String, amount: Number },
    next: (body) => body.shipment,
  },
  shipment: {
    model: 'Shipment',
    schema: { id: String, directions: String },
    next: () => null,
  },
};
const service = SERVICES[ID];
if (!service) {
  console.error(`ID must be one of ${Object.keys(SERVICES).join(', ')} (got '${ID}')`);
  process.exit(2);
}
const Model = mongoose.model(service.model, new mongoose.Schema(service.schema));

// The next hop: one HTTP POST, wrapped by the breaker.
async function callNext(part, count) {
  const response = await axios.post(`${CHAIN_SVC}?count=${count}`, part);
  return response.data;
}
const breaker = new CircuitBreaker(callNext, {
  timeout: 300,
  errorThresholdPercentage: 50,
  resetTimeout: 10000,
});
breaker.fallback((part, count, err) => ({
  status: 'degraded',
  fallback: { reason: 'fallback', detail: `${CHAIN_SVC}: ${err ? err.message : 'unavailable'}` },
}));
for (const event of ['open', 'halfOpen', 'close']) {
  breaker.on(event, () => console.log(JSON.stringify({ service: ID, breaker: CHAIN_SVC, event })));
}

const app = express();
app.use(express.json());

app.get('/', (req, res) => res.send(`hello from ${ID}`));

app.post('/create', async (req, res) => {
  const count = (parseInt(req.query.count, 10) || 0) + 1;
  if (count >= JUMPS) {
    return res.json({ status: 'last', message: 'Last' });
  }
  const body = req.body || {};
  try {
    await new Model(body).save();
  } catch (err) {
    return res.status(503).json({ service: ID, status: 'error', message: err.message });
  }
  if (INJECT_ERR && Math.random() < ERR_RATE) {
    return res.status(502).json({ service: ID, status: 'error', message: 'injected error' });
  }
  const part = service.next(body);
  if (!CHAIN_SVC || part == null) {
    return res.json({ service: ID, id: body.id, count, status: 'completed', next: null });
  }
  const next = await breaker.fire(part, count).catch((err) => ({
    status: 'degraded',
    fallback: { reason: 'error', detail: err.message },
  }));
  const status = next && next.status === 'degraded' ? 'degraded' : 'completed';
  return res.json({ service: ID, id: body.id, count, status, next });
});

mongoose
  .connect(MONGO_URL, { serverSelectionTimeoutMS: 10000 })
  .then(() => {
    app.listen(PORT, () => console.log(`${ID} listening on :${PORT}, chain ${CHAIN_SVC || '-'}`));
  })
  .catch((err) => {
    console.error(`${ID}: cannot connect to ${MONGO_URL}: ${err.message}`);
    process.exit(1);
  });
