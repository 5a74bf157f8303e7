"""App start times in a real browser: first start to first results, then a later start.

    python bench/app_speed.py [--keep DIR]

A first start on a fresh clone generates the synthetic demo set, scores it with the bundled
checkpoints (checkpoints/) and shows the official scores on the home page. The benchmark
reproduces that with empty temporary demo and runs folders (``ASD_DEMO_DATA``/``ASD_RUNS``),
starts ``streamlit run app.py``, opens the home page in headless Debian chromium and times until
the first official score is on screen (the cheapest system is scored first and shown while the
others are scored) and until all four are. It then restarts the server and times the same for
a later start (everything on disk already). Targets (issue 6): under 90 s and under 5 s on the
2-core machine. Needs chromium (``apt-get install -y chromium``) and the playwright package.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from e2e_support import browser_page, streamlit_server  # noqa: E402

HEADLINE = "text=Official score per system"


def time_to_results(env: dict[str, str], log: Path, timeout_s: float) -> tuple[float, float, float, list[str]]:
    """Seconds until the server answered, until the first official score showed, until every bundled
    system's score showed; and the metric cards' texts at the end."""
    t0 = time.perf_counter()
    with streamlit_server(env, log) as (url, server_s), browser_page() as page:
        page.goto(url, timeout=timeout_s * 1000)
        page.wait_for_selector(HEADLINE, timeout=timeout_s * 1000)
        page.wait_for_selector("[data-testid='stMetricValue'] >> text=/ %$/", timeout=timeout_s * 1000)
        first = time.perf_counter() - t0
        page.wait_for_function(
            """() => [...document.querySelectorAll("[data-testid='stMetricValue']")]
                     .filter(e => / %$/.test(e.innerText)).length >= 4""", timeout=timeout_s * 1000)
        every = time.perf_counter() - t0
        cards = page.locator("[data-testid='stMetric']").all_inner_texts()
    return server_s, first, every, cards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", default=None, help="use and keep this folder (default: a temporary one)")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="asd_app_speed_"))
    env = {"ASD_DEMO_DATA": str(base / "demo_data"), "ASD_RUNS": str(base / "runs")}
    shutil.rmtree(base / "demo_data", ignore_errors=True)
    shutil.rmtree(base / "runs", ignore_errors=True)
    base.mkdir(parents=True, exist_ok=True)
    try:
        server1, first, every, cards = time_to_results(env, base / "first.log", args.timeout)
        print(f"first start : server up in {server1:5.1f} s, first results on screen after {first:6.1f} s "
              f"(target < 90 s), all four bundled systems after {every:6.1f} s")
        print("  demo data generated, then scored by the bundled checkpoints (the cheapest system first)")
        print("  cards: " + " | ".join(c.replace("\n", " ") for c in cards))
        server2, later, every2, _ = time_to_results(env, base / "later.log", args.timeout)
        print(f"later start : server up in {server2:5.1f} s, results on screen after {later:6.1f} s (target < 5 s)")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
