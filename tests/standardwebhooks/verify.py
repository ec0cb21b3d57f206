"""Verifies one delivery with the official `standardwebhooks` library (PyPI).

stdin: {"secret", "body", "headers", "plain"}; with "plain", the secret is converted the way
the README shows for a user-chosen secret. Prints "verified" or exits 1 with the library's error.
"""
import base64
import json
import sys

from standardwebhooks.webhooks import Webhook

req = json.load(sys.stdin)
secret = req["secret"]
if req.get("plain"):
    # The README's one-line conversion of a plain secret:
    secret = "whsec_" + base64.b64encode(secret.encode()).decode()
try:
    Webhook(secret).verify(req["body"], req["headers"])
except Exception as e:  # the library raises WebhookVerificationError, or a decoding error
    print(f"failed: {type(e).__name__}: {e}")
    sys.exit(1)
print("verified")
