"""The dashboard's weight and its time to first render with many agents and messages stored.

    RELAY_BIN=target/release/agent-relay target/browser-venv/bin/python tests/browser/measure.py \
        [AGENTS] [MESSAGES]

Prints the bytes of the page's files (raw and gzip -9) and, on a relay with AGENTS agents
(1,000) and MESSAGES messages (10,000) stored through the API, the time from pressing "Sign in"
to the agents view listing every agent and to the feed showing its 50 newest messages (median of
five loads in a fresh tab each).
"""

import gzip
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import CHROMIUM_FLAGS, Relay
from playwright.sync_api import sync_playwright

FILES = ["/", "/dashboard/app.js", "/dashboard/style.css", "/dashboard/icon.svg"]


def main(agents=1000, messages=10000):
    with tempfile.TemporaryDirectory() as workdir:
        relay = Relay(Path(workdir))
        try:
            raw = zipped = 0
            for path in FILES:
                body = urllib.request.urlopen(relay.url + path).read()
                raw += len(body)
                zipped += len(gzip.compress(body, 9))
                print(f"{path}: {len(body)} bytes, {len(gzip.compress(body, 9))} gzip")
            print(f"page weight: {raw} bytes, {zipped} bytes gzip -9")

            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda n: relay.register({"id": f"agent-{n:04}", "label": f"team-{n % 10}"}), range(agents)))
                list(pool.map(lambda n: relay.send({"from": "user", "to": f"agent-{n % agents:04}", "body": f"message {n}", "claimable": n % 3 == 0}), range(messages)))
            print(f"stored {agents} agents and {messages} messages in {time.monotonic() - started:.1f} s")

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
                agents_ms, feed_ms = [], []
                for _ in range(5):
                    # (The test harness polls with evaluated strings, which the page's CSP forbids.)
                    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
                    page = context.new_page()
                    page.goto(relay.url + "/")
                    page.fill("#token", relay.operator)
                    page.evaluate("window.__t0 = performance.now()")
                    page.click("#sign-in-form button")
                    page.wait_for_function(f"document.querySelectorAll('#agents-table tbody tr').length >= {agents + 2}", timeout=60000)
                    agents_ms.append(page.evaluate("performance.now() - window.__t0"))
                    page.wait_for_function("document.querySelectorAll('#feed-list li.message').length >= 50", timeout=60000)
                    feed_ms.append(page.evaluate("performance.now() - window.__t0"))
                    context.close()
                browser.close()
            print(f"agents view, first render: median {statistics.median(agents_ms):.0f} ms ({', '.join(f'{t:.0f}' for t in agents_ms)})")
            print(f"feed, first render: median {statistics.median(feed_ms):.0f} ms ({', '.join(f'{t:.0f}' for t in feed_ms)})")
        finally:
            relay.stop()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
