// Verifies one delivery with the official `standardwebhooks` library (npm).
// stdin: {"secret", "body", "headers", "plain"}; with "plain", the secret is converted the way
// the README shows for a user-chosen secret. Prints "verified" or exits 1 with the library's error.
const path = require("path");
const { Webhook } = require(path.join(__dirname, "../../.node-standardwebhooks/node_modules/standardwebhooks"));

let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const req = JSON.parse(input);
  let secret = req.secret;
  if (req.plain) {
    // The README's one-line conversion of a plain secret:
    secret = "whsec_" + Buffer.from(secret).toString("base64");
  }
  try {
    new Webhook(secret).verify(req.body, req.headers);
  } catch (e) {
    console.log(`failed: ${e.message}`);
    process.exit(1);
  }
  console.log("verified");
});
