"""Fixtures of the browser suite: the local runner (embedded backend), receivers on 127.0.0.1,
Debian's Chromium driven headless by Playwright, and a console-error check on every page.

Run by infra/browser.sh (phase 2 of `make test`, inside a network namespace with only
127.0.0.1). Needs target/debug/webhooks-local (or WEBHOOKS_LOCAL) and /usr/bin/chromium (or
CHROMIUM).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCREENSHOTS = HERE / "screenshots"
JWT_SECRET = "browser-suite-jwt-secret-0123456789abcdef"
RUNNER = Path(os.environ.get("WEBHOOKS_LOCAL", ROOT / "target" / "debug" / "webhooks-local"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
AXE = Path(os.environ.get("AXE_JS", ROOT / ".venv-browser" / "axe-core" / "axe.min.js"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """An HTTP receiver on 127.0.0.1 that records every request and answers `status` (which a
    test may change, to fix a failing receiver)."""

    def __init__(self, status: int, body: bytes):
        self.requests: list[dict] = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                receiver.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": raw})
                self.send_response(receiver.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Runner:
    """`webhooks-local` on a free port; `settings` override its environment (e.g. breaker)."""

    def __init__(self, **settings: str):
        if not RUNNER.exists():
            raise RuntimeError(f"{RUNNER} is missing: run `cargo build -p webhooks-local` first")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.log_path = SCREENSHOTS / ("runner.log" if not settings else f"runner-{uuid.uuid4().hex[:8]}.log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL") and k != "BACKEND"}
        # The durable default, in an empty data directory of its own.
        self.data_dir = tempfile.mkdtemp(prefix="webhooks-browser-")
        env.update(
            DATA_DIR=self.data_dir,
            PORT=str(self.port),
            JWT_SECRET=JWT_SECRET,
            # Three attempts a second or so apart, so a failing receiver's story fits a test.
            RETRY_SCHEDULE_SECONDS="1,1",
            TEST_TIMEOUT_SECONDS="5",
            DELIVERY_TIMEOUT_SECONDS="5",
            RUST_LOG="warn",
            # The breaker stays shut here, so a failing receiver's story (and a resend or a
            # recovery after it) is never deferred by it; the health tests run a runner of
            # their own with a low BREAKER_FAILURES.
            BREAKER_FAILURES="1000",
        )
        env.update(settings)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([str(RUNNER)], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"webhooks-local exited: {self.log_path.read_text()}")
            try:
                urllib.request.urlopen(self.base + "/api/openapi.json", timeout=1).read()
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        else:
            raise RuntimeError("webhooks-local did not start listening in 30 s")

    def banner(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def token(self, tenant: str | None = None) -> str:
        tenant = tenant or f"t-{uuid.uuid4().hex[:10]}"
        out = subprocess.run(
            [str(RUNNER), "token", "--sub", "dev@example.com", "--tenant", tenant],
            env={**os.environ, "JWT_SECRET": JWT_SECRET},
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def api(self, method: str, path: str, token: str | None, body=None) -> tuple[int, dict | list | None]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                raw = res.read()
                return res.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, (json.loads(raw) if raw else None)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def runner():
    r = Runner()
    yield r
    r.close()


@pytest.fixture(scope="session")
def ok_receiver():
    r = Receiver(200, b"ok: received")
    yield r
    r.close()


@pytest.fixture(scope="session")
def failing_receiver():
    r = Receiver(500, b"receiver is down for maintenance")
    yield r
    r.close()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class PageErrors:
    """Console errors and uncaught exceptions of one page; a test may allow the HTTP errors it
    provokes on purpose (Chromium logs a failed fetch as a console error)."""

    def __init__(self, page):
        self.errors: list[str] = []
        self.allowed: list[re.Pattern] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def allow_http(self, status: int):
        self.allowed.append(re.compile(rf"^Failed to load resource: the server responded with a status of {status}\b"))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


def new_page(browser, width: int = 1440, height: int = 900, **options):
    context = browser.new_context(viewport={"width": width, "height": height}, **options)
    page = context.new_page()
    page.set_default_timeout(15000)
    errors = PageErrors(page)
    return context, page, errors


@pytest.fixture
def page_and_errors(browser):
    context, page, errors = new_page(browser)
    yield page, errors
    context.close()
    assert errors.unexpected() == [], "console errors"


@pytest.fixture
def page(page_and_errors):
    return page_and_errors[0]


def sign_in(page, runner: Runner, token: str):
    page.goto(f"{runner.base}/#token={token}")
    page.get_by_role("heading", name="Webhooks", level=1).wait_for()


def axe_check(page, label: str) -> list[dict]:
    """Runs axe-core on the page as it is; answers the serious and critical violations."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE.read_text())
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    report = SCREENSHOTS / "axe.jsonl"
    with report.open("a") as f:
        for v in result["violations"]:
            f.write(json.dumps({"state": label, "id": v["id"], "impact": v["impact"], "nodes": len(v["nodes"])}) + "\n")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "targets": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
