"""Start ``streamlit run app.py`` and drive it with Debian's chromium through Playwright.

Shared by the browser test (tests/test_e2e_browser.py) and the start-time benchmark
(bench/app_speed.py). Playwright's own browser download is never used: the system chromium is
launched through ``executable_path`` with the flags this sandboxed machine needs.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(env: dict[str, str], log: Path, timeout: float = 120,
                     info: dict | None = None) -> Iterator[tuple[str, float]]:
    """Run the app on a free localhost port; yields (base URL, seconds until the server answered).

    ``info``, when given, receives the server's ``pid`` (the start-time benchmark reads its CPU time).
    """
    import urllib.request

    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    if info is not None:
        info["pid"] = proc.pid
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1).read()
                break
            except OSError:
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"streamlit did not answer in {timeout} s: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield url, time.perf_counter() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def browser_page(viewport: tuple[int, int] = (1400, 1000)) -> Iterator:
    """A Playwright page in headless Debian chromium."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            yield page
        finally:
            browser.close()


def wait_for_app(page, timeout_ms: float = 120_000) -> None:
    """Wait until Streamlit has finished the script run (the app root's script state is
    ``notRunning``, as Streamlit's own browser tests check), twice in a row 0.5 s apart: a rerun
    triggered by a widget can start just after a first quiet look."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout_ms)
    quiet = ("() => { const app = document.querySelector(\"[data-testid='stApp']\");"
             " return app && app.getAttribute('data-test-script-state') === 'notRunning'"
             " && !document.querySelector(\"[data-testid='stSkeleton']\"); }")
    for _ in range(2):
        page.wait_for_timeout(500)
        page.wait_for_function(quiet, timeout=timeout_ms)
