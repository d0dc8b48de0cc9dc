"""A real relay and a real browser for the dashboard tests (tests/browser/run.sh)."""

import json
import os
import re
import secrets
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Relay:
    """`agent-relay serve` on a free loopback port, a fresh SQLite database, an operator token."""

    def __init__(self, workdir: Path, extra=()):
        self.operator = "browser-test-operator-" + secrets.token_hex(16)
        self.log_path = workdir / "server.log"
        self.log = open(self.log_path, "w")
        env = dict(os.environ, RELAY_OPERATOR_TOKEN=self.operator, RELAY_LOG="info")
        self.process = subprocess.Popen(
            [os.environ["RELAY_BIN"], "serve", "--listen", "127.0.0.1:0", "--db", str(workdir / "relay.db"), *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while True:
            found = re.search(r"listen=(\S+)", self.log_path.read_text())
            if found:
                self.url = "http://" + found.group(1)
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the relay did not start:\n" + self.log_path.read_text())
            time.sleep(0.05)

    def call(self, method, path, body=None, token=None, expect=None):
        """One request; answers (status, parsed JSON or text)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", "Bearer " + (token or self.operator))
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw, ctype = response.status, response.read().decode(), response.headers.get("content-type", "")
        except urllib.error.HTTPError as error:
            status, raw, ctype = error.code, error.read().decode(), error.headers.get("content-type", "")
        parsed = json.loads(raw) if raw and "json" in ctype else raw
        if expect is not None:
            assert status == expect, f"{method} {path}: {status} {raw}"
        return status, parsed

    def register(self, card):
        """Registers an agent; answers its token."""
        _, answer = self.call("POST", "/v1/agents", card, expect=201)
        return answer["token"]

    def send(self, message, token=None):
        """Sends a message; answers it as stored."""
        status, answer = self.call("POST", "/v1/messages", message, token=token)
        assert status in (200, 201), answer
        return answer["message"]

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def relay():
    with tempfile.TemporaryDirectory() as workdir:
        server = Relay(Path(workdir))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=CHROMIUM_FLAGS
        )
        yield launched
        launched.close()


class Watched:
    """A page with what went wrong on it: console errors (a CSP refusal is one), dialogs."""

    def __init__(self, page):
        self.page = page
        self.errors = []
        self.dialogs = []
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))

        def on_dialog(dialog):
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)


@pytest.fixture
def open_page(browser):
    """Opens a fresh tab (its own sessionStorage) at a size; closes them all at the end."""
    contexts = []

    def opener(width=1280, height=800, color_scheme="light"):
        context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=color_scheme)
        contexts.append(context)
        return Watched(context.new_page())

    yield opener
    for context in contexts:
        context.close()


def sign_in(watched, relay, token):
    page = watched.page
    page.goto(relay.url + "/")
    page.fill("#token", token)
    page.click("#sign-in-form button")


def screenshot(page, name, full_page=True):
    directory = Path(os.environ.get("SCREENSHOTS", "target/screenshots"))
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(directory / f"{name}.png"), full_page=full_page)
