"""One lane of the demo's first start: score the data folder with one bundled model's systems, in a child process.

    python -m asdcore.app.demo_lane --data DATA --out RUNS/demo --jobs '[["RUN", "SYSTEM"], ...]' [--wait]

:class:`asdcore.app.workspace.DemoBuild` starts one such process per bundled model, so the two models
score side by side on a 2-core machine. Why processes and not threads: the three-subnetworks model reads
clips through worker processes (torch's DataLoader forks them); a fork taken while another thread of the
same process is inside torch or the allocator can leave the child waiting on a lock nobody will release,
and the first start then hung for good. In its own process each lane is single-threaded when it forks,
as the command line is; it also keeps the scoring off the app server's GIL.

``--wait``: load the libraries, then wait for one line ``go`` on stdin before scoring (end of input:
exit at once). The parent starts its lanes while it generates the data, so the seconds a fresh
process spends importing torch and scikit-learn pass during the generation instead of after it.

The systems of the list are scored in order; a later system of the same run reuses the first one's saved
embeddings (:func:`asdcore.app.workspace.ensure_scored` ``sibling``). Progress goes to stdout as one JSON
object a line (``system``, ``state``: running/done/failed, ``done``: clips read so far, ``message``,
``seconds``), at most every :data:`REPORT_SECONDS` while clips are read; a system that fails is one line
with its message and the next system is still scored. Exit status 0 when every system was scored, else 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

#: Least time between two progress lines about clips read (state changes are reported at once).
REPORT_SECONDS = 0.25


def report(**fields) -> None:
    """One progress line on stdout for the parent (:class:`asdcore.app.workspace.DemoBuild`)."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def score_lane(data: Path, out: Path, jobs: list[tuple[str, str]]) -> bool:
    """Score ``data`` with each ``(run, system)`` of ``jobs`` into ``out/<system>``; True when all were scored."""
    from asdcore.app.workspace import ensure_scored, is_current, one_line
    from asdcore.progress import listening

    ok = True
    sibling: Path | None = None
    for run, system in jobs:
        target = out / system
        t0 = time.perf_counter()
        if is_current(target, Path(run), system, data):
            report(system=system, state="done", done=0, message="already scored", seconds=0.0)
            sibling = sibling or target
            continue
        done, last = [0], [0.0]

        def on_clips(n: int, system: str = system) -> None:
            done[0] += n
            if time.perf_counter() - last[0] >= REPORT_SECONDS:
                last[0] = time.perf_counter()
                report(system=system, state="running", done=done[0])

        report(system=system, state="running", done=0)
        try:
            with listening(on_clips):
                ensure_scored(run, system, data, target, sibling=sibling)
        except Exception as exc:  # noqa: BLE001 - one line for the page; the lane goes on
            ok = False
            report(system=system, state="failed", done=done[0], message=one_line(exc),
                   seconds=time.perf_counter() - t0)
            continue
        report(system=system, state="done", done=done[0], message="scored", seconds=time.perf_counter() - t0)
        sibling = sibling or target
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the demo data folder")
    p.add_argument("--out", required=True, help="the demo's folder of scored folders (<runs>/demo)")
    p.add_argument("--jobs", required=True, help='JSON list of [run folder, system] pairs, scored in order')
    p.add_argument("--wait", action="store_true", help="wait for a line 'go' on stdin before scoring")
    args = p.parse_args(argv)
    from asdcore.threads import use_threads

    use_threads()  # one thread: the other lane has the other core (asdcore.threads); imports torch, sklearn
    import asdcore.app.workspace  # noqa: F401 - the rest of what scoring imports, before the wait
    import asdcore.systems  # noqa: F401

    if args.wait and sys.stdin.readline().strip() != "go":
        return 0  # the parent gave up (the data could not be made) or is gone
    jobs = [(str(run), str(system)) for run, system in json.loads(args.jobs)]
    return 0 if score_lane(Path(args.data), Path(args.out), jobs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
