"""Verifies recorded deliveries with the official Standard Webhooks library (PyPI
`standardwebhooks`), as a Python receiver would.

stdin: a JSON array of {"secret": str, "body": base64 str, "headers": {name: value}}.
stdout: a JSON array with, for each, "ok" or the library's error message.
"""
import base64
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

results = []
for case in json.load(sys.stdin):
    try:
        Webhook(case["secret"]).verify(base64.b64decode(case["body"]), case["headers"])
        results.append("ok")
    except WebhookVerificationError as e:
        results.append(str(e) or type(e).__name__)
print(json.dumps(results))
