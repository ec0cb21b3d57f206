// The guide's Node.js check, as the README's "For receivers" section shows it for a rotation:
// the receiver holds the secrets it trusts (during a switch, its old and its new one) and
// accepts X-Webhook-Signature if any of them verifies the body (JSON.stringify(req.body), as in
// the guide). Reads a JSON array of {secrets: [..], body: base64, signature} on stdin, prints
// a JSON array of booleans.
const crypto = require('crypto');

function verifyWebhookSignature(requestBody, signature, secret) {
  const computedSignature = crypto.createHmac('sha256', secret).update(requestBody).digest('hex');
  // The guide's timingSafeEqual throws on a length mismatch: compare lengths first.
  if (Buffer.from(signature).length !== Buffer.from(computedSignature).length) return false;
  return crypto.timingSafeEqual(Buffer.from(signature), Buffer.from(computedSignature));
}

function verifyWithAny(requestBody, signature, secrets) {
  return secrets.some((secret) => verifyWebhookSignature(requestBody, signature || '', secret));
}

let input = '';
process.stdin.on('data', (c) => (input += c));
process.stdin.on('end', () => {
  const verdicts = JSON.parse(input).map(({ secrets, body, signature }) => {
    const parsed = JSON.parse(Buffer.from(body, 'base64').toString('utf8'));
    return verifyWithAny(JSON.stringify(parsed), signature, secrets);
  });
  console.log(JSON.stringify(verdicts));
});
