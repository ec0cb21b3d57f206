"""moto server as `moto_server -H HOST -p PORT` runs it, with one difference: DynamoDB requests
are handled one at a time.

moto's threaded server applies two concurrent writes to one item without serialising them, so
two conditional writes racing on a key can both succeed, and one of two updates can be lost.
DynamoDB never does either: every write to an item is atomic, its condition included. The
project's guarantees rest on that (the claim of an event id, appending attempts), and the
race tests check them, so the emulator must keep it too. SQS requests stay concurrent: long
polls must not block anything.

Usage: python infra/moto_server.py HOST PORT
"""

import signal
import sys
import threading

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)

DYNAMODB_LOCK = threading.Lock()


class SerialisedDynamoDB:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("DynamoDB_"):
            with DYNAMODB_LOCK:
                # The whole body is produced under the lock, not only the call.
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, SerialisedDynamoDB(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
