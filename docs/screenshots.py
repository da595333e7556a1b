"""Screenshots of the web pages on a real `make demo` home, for README.

Starts `tunegraph serve` on the data root (TUNEGRAPH_HOME, default .tunegraph) with its trained
models, drives Debian's Chromium with Playwright as a person would (assess two held-out demo
photos with both approaches, ask the five chat modes one question, run a small compare job and
open its report, look at the jobs), and saves one PNG per page into docs/.

    python docs/screenshots.py [--port 8765]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

DOCS = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
QUESTION = "What is the wheel speed sensor bolt torque?"


def wait_ready(url: str, server: subprocess.Popen, timeout_s: float = 600) -> None:
    """Until /readyz answers 200 (the models load on its first call)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"tunegraph serve exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise SystemExit(f"{url}/readyz was not ready within {timeout_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    home = Path(os.environ.get("TUNEGRAPH_HOME", ".tunegraph"))
    photos = sorted((home / "demo" / "damage" / "images").glob("*.jpg"))[-2:]
    if not photos:
        raise SystemExit(f"no demo photos under {home}: run `make demo` first")
    url = f"http://127.0.0.1:{args.port}"
    command = [sys.executable, "-m", "api.cli.main", "serve", "--port", str(args.port)]
    server = subprocess.Popen(command, env={**os.environ, "TUNEGRAPH_HOME": str(home)})
    try:
        wait_ready(url, server)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.set_default_timeout(300_000)
            expect.set_options(timeout=300_000)  # the real models answer in seconds, not ms

            page.goto(f"{url}/ui/")
            page.get_by_label("Photos").set_input_files(photos)
            page.get_by_label("Both, side by side").check()
            page.get_by_role("button", name="Assess").click()
            expect(page.locator("#agreement")).to_contain_text("The approaches agree")
            page.screenshot(path=DOCS / "ui_assess.png", full_page=True)

            page.goto(f"{url}/ui/chat")
            page.get_by_label("Question").fill(QUESTION)
            page.get_by_role("button", name="Ask all modes").click()
            expect(page.locator("#chat-status")).to_have_text("All modes answered.")
            page.screenshot(path=DOCS / "ui_chat.png", full_page=True)

            params = {"name": "screenshots", "images": 2, "questions": 1}
            job = httpx.post(f"{url}/v1/jobs", json={"kind": "compare", "params": params})
            job.raise_for_status()
            page.goto(f"{url}/ui/jobs")
            state = page.locator(f'[data-job="{job.json()["id"]}"] .state')
            expect(state).to_have_text("running")
            page.screenshot(path=DOCS / "ui_jobs.png")
            expect(state).to_have_text("succeeded", timeout=900_000)

            page.goto(f"{url}/ui/reports")
            page.get_by_role("button", name="Open report screenshots").click()
            page.frame_locator("#report-frame").locator("h1").wait_for()
            page.screenshot(path=DOCS / "ui_reports.png", full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    print("saved", ", ".join(f"docs/ui_{n}.png" for n in ("assess", "chat", "reports", "jobs")))


if __name__ == "__main__":
    main()
