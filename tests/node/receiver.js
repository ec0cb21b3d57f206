// A receiver written the way the integration guide's Node.js example is: it verifies
// JSON.stringify(JSON.parse(body)) (what `JSON.stringify(req.body)` is behind express.json()),
// and also reports whether the raw bytes verify. Prints "PORT <n>" once listening, then one
// JSON line per request.
const http = require('http');
const crypto = require('crypto');

const secret = process.env.SECRET;

function verifyWebhookSignature(requestBody, signature, secret) {
  const computedSignature = crypto.createHmac('sha256', secret).update(requestBody).digest('hex');
  if (Buffer.from(signature).length !== Buffer.from(computedSignature).length) return false;
  return crypto.timingSafeEqual(Buffer.from(signature), Buffer.from(computedSignature));
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks);
    const signature = req.headers['x-webhook-signature'] || '';
    let reserialised = '';
    try {
      reserialised = JSON.stringify(JSON.parse(raw.toString('utf8')));
    } catch (e) {
      reserialised = '<unparseable>';
    }
    const guideOk = verifyWebhookSignature(reserialised, signature, secret);
    const rawOk = verifyWebhookSignature(raw, signature, secret);
    console.log(JSON.stringify({ guideOk, rawOk, identical: reserialised === raw.toString('utf8') }));
    res.writeHead(guideOk && rawOk ? 200 : 401);
    res.end(guideOk ? 'Webhook received' : 'Invalid signature');
  });
});

server.listen(0, '127.0.0.1', () => console.log('PORT ' + server.address().port));
// Bounded life: a test that forgets this process does not leave it running.
setTimeout(() => process.exit(0), 120000).unref();
