"""Issue 22: one guard for every write (asdcore.outputs), staged results that survive a kill, one writer per
folder, preflight of the output location, and the CLI cases of bench/bad_inputs_writes.py run for real."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asdcore.cli import main
from conftest import refused
from asdcore.outputs import (COMPLETE, LOCK, PREVIOUS, STAGING, FolderLock, OutputError, check_writable, claim_file,
                             claim_folder, recover, staged)

ROOT = Path(__file__).resolve().parents[1]


def tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture
def work(tiny_data, tmp_path, monkeypatch) -> Path:
    """A fresh working folder as bench/bad_inputs.py makes it: data, a 1-epoch AE run, a scored folder, the
    fixtures of bench.bad_inputs_writes; the current folder is it (the bench's cases use relative paths)."""
    from bench import bad_inputs_writes

    root = tmp_path / "work"
    shutil.copytree(tiny_data, root / "data")
    monkeypatch.chdir(root)
    assert main(["train", "data", "--system", "ae-mse", "--out", "runs/ae", "--epochs", "1", "--device", "cpu",
                 "--quiet"]) == 0
    assert main(["score", "runs/ae", "data", "--out", "scored/ae-data", "--quiet"]) == 0
    bad_inputs_writes.make_fixtures(root)
    return root


# --------------------------------------------------------------------------- the guard


def test_claim_folder_allows_only_new_empty_or_own(tmp_path):
    assert claim_folder(tmp_path / "new", "scored") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    claim_folder(tmp_path / "empty", "scored")
    leftovers = tmp_path / "killed"
    (leftovers / STAGING / "scores").mkdir(parents=True)
    (leftovers / LOCK).write_text("123\n")
    claim_folder(leftovers, "scored")  # only a killed run's bookkeeping: the tool's own
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "scored.json").write_text(json.dumps({"system": "ae-mse"}))
    (mine / "scores").mkdir()
    claim_folder(mine, "scored")
    with pytest.raises(OutputError, match="is a scored folder of this tool, not a bundle"):
        claim_folder(mine, "bundle")
    user = tmp_path / "user"
    user.mkdir()
    (user / "todo.txt").write_text("x")
    with pytest.raises(OutputError, match=r"holds files this tool did not write \(todo.txt\)"):
        claim_folder(user, "scored")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        claim_folder(tmp_path / "file", "scored")


def test_protected_inputs_are_never_outputs(tmp_path):
    member = tmp_path / "runs" / "a"
    member.mkdir(parents=True)
    for out, words in ((member, "is "), (member / "sub", "is inside"), (tmp_path / "runs", "holds")):
        with pytest.raises(OutputError, match=f"{words}.*which is an input"):
            claim_folder(out, "ensemble", protect=[member])
    with pytest.raises(OutputError, match="which is an input"):
        claim_file(member / "m.csv", "metrics-csv", protect=[member])


def test_claim_file_recognises_its_own_kind(tmp_path):
    from asdcore.metrics import write_metrics_csv

    metrics = tmp_path / "m.csv"
    claim_file(metrics, "metrics-csv")
    import pandas as pd

    write_metrics_csv(pd.DataFrame({"machine": ["fan", "All", "hmean"], "section": ["00", None, None],
                                    "auc_source": [0.5] * 3, "auc_target": [0.5] * 3, "pauc": [0.5] * 3}), metrics)
    claim_file(metrics, "metrics-csv")
    with pytest.raises(OutputError, match="not an ensemble file"):
        claim_file(metrics, "ensemble-json")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(OutputError, match="not a metrics CSV this tool wrote"):
        claim_file(notes, "metrics-csv")
    with pytest.raises(OutputError, match="notes.txt is a file, not a folder"):
        claim_file(notes / "m.csv", "metrics-csv")
    with pytest.raises(OutputError, match="is a folder"):
        claim_file(tmp_path, "metrics-csv")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere; the read-only mount test covers this as root")
def test_check_writable_refuses_a_folder_without_write_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(OutputError, match="permission denied"):
        check_writable(locked / "x")


def test_free_space_is_checked_before_writing(tmp_path):
    with pytest.raises(OutputError, match="MiB free on its disk"):
        check_writable(tmp_path / "x", need_bytes=1 << 60)


# --------------------------------------------------------------------------- staged results


def _old_results(out: Path) -> None:
    (out / "scores").mkdir(parents=True)
    (out / "scores" / "a.csv").write_text("old a")
    (out / "scores" / "gone.csv").write_text("old, superseded")
    (out / "metrics.csv").write_text("old metrics")
    (out / "user.txt").write_text("the user's")


def test_staged_swaps_in_only_when_complete(tmp_path):
    out = tmp_path / "out"
    _old_results(out)
    with pytest.raises(RuntimeError):
        with staged(out, replaces=("scores", "metrics.csv")) as staging:
            (staging / "scores").mkdir()
            (staging / "scores" / "a.csv").write_text("new a")
            raise RuntimeError("killed half way")
    assert (out / "scores" / "a.csv").read_text() == "old a" and not (out / STAGING).exists()
    with staged(out, replaces=("scores", "metrics.csv")) as staging:
        (staging / "scores").mkdir()
        (staging / "scores" / "a.csv").write_text("new a")
    assert sorted(p.name for p in out.iterdir()) == ["scores", "user.txt"]  # metrics.csv superseded, user's kept
    assert [p.name for p in (out / "scores").iterdir()] == ["a.csv"] and (out / "user.txt").read_text() == "the user's"


def test_recover_finishes_a_complete_swap_and_undoes_an_incomplete_one(tmp_path):
    out = tmp_path / "out"
    _old_results(out)
    # killed while writing: the staging folder is incomplete, one old entry was already moved aside
    (out / STAGING / "scores").mkdir(parents=True)
    (out / PREVIOUS).mkdir()
    os.replace(out / "metrics.csv", out / PREVIOUS / "metrics.csv")
    assert "cleared" in recover(out)
    assert (out / "metrics.csv").read_text() == "old metrics" and not (out / STAGING).exists()
    assert not (out / PREVIOUS).exists()
    # killed while swapping a complete result: finished
    (out / STAGING / "scores").mkdir(parents=True)
    (out / STAGING / "scores" / "a.csv").write_text("new a")
    (out / STAGING / COMPLETE).touch()
    assert "finished" in recover(out)
    assert (out / "scores" / "a.csv").read_text() == "new a" and (out / "user.txt").exists()
    assert recover(out) is None


def test_folder_lock_refuses_a_second_process_and_not_a_dead_one(tmp_path):
    folder = tmp_path / "run"
    code = ("import sys, time; from asdcore.outputs import FolderLock; FolderLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match=f"another process \\(PID {holder.pid}\\)"):
            FolderLock(folder).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert (folder / LOCK).exists()  # the dead holder's file is still there; it does not block
    with FolderLock(folder):
        with FolderLock(folder):  # re-entrant within a process (train holds the run, then scores into it)
            pass
        assert (folder / LOCK).exists()
    assert not (folder / LOCK).exists()


# --------------------------------------------------------------------------- the CLI, as the bench runs it


def test_outputs_that_are_not_the_tools_are_refused(work, capsys):
    before = tree(work)
    refused(["ensemble", "runs/ae", "scored/ae-data", "--out", "runs/ae"], capsys, "which is an input")
    refused(["evaluate", "data", "runs/ae/scores", "--out", "notes.txt"], capsys, "not a metrics CSV this tool wrote")
    refused(["ensemble", "runs/ae", "scored/ae-data", "--out", "ens", "--save", "notes.txt"], capsys,
            "not an ensemble file this tool wrote")
    refused(["ensemble", "runs/ae", "scored/ae-data", "--out", "team"], capsys, "did not write (metrics.csv, scores)")
    refused(["evaluate", "data", "runs/ae/scores", "--out", "notes.txt/m.csv"], capsys, "is a file, not a folder")
    refused(["score", "runs/ae", "data", "--out", "/proc/x", "--quiet"], capsys, "--out /proc/x: cannot write /proc")
    assert main(["evaluate", "data", "team/scores"]) == 0  # without --out nothing is written
    capsys.readouterr()
    assert tree(work) == before


def test_an_ensemble_rewrites_its_own_folder_and_file(work, capsys):
    args = ["ensemble", "runs/ae", "scored/ae-data", "--out", "ens", "--save", "ens.json"]
    assert main(args) == 0
    first = (work / "ens.json").read_text()
    assert main(args) == 0
    assert json.loads((work / "ens.json").read_text())["members"] == json.loads(first)["members"]
    assert not [p for p in (work / "ens").iterdir() if p.name.startswith(".asd-")]


def test_kill_during_a_rescore_keeps_the_previous_results(work):
    from bench.bad_inputs_writes import kill_during_rescore

    proc = kill_during_rescore(work)
    assert proc.returncode == 0, proc.stderr
    assert "cleared" in proc.stderr and "Traceback" not in proc.stderr


def test_two_trainings_of_one_folder(work):
    from bench.bad_inputs_writes import two_trainings

    proc = two_trainings(work)
    assert proc.returncode == 2, proc.stderr
    assert "is being written by another process (PID" in proc.stderr
    assert json.loads((work / "runs" / "twice" / "config.json").read_text())["status"] == "scored"


def test_resume_with_more_epochs_trains_them_and_fewer_is_refused(work, capsys):
    import torch

    assert main(["train", "data", "--system", "ae-mse", "--out", "runs/ae", "--resume", "--epochs", "2",
                 "--quiet"]) == 0
    for ckpt in (work / "runs" / "ae" / "checkpoint").glob("*.pt"):
        assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    capsys.readouterr()
    before = tree(work / "runs" / "ae")
    refused(["train", "data", "--system", "ae-mse", "--out", "runs/ae", "--resume", "--epochs", "1", "--quiet"],
            capsys, "already trained 2 epoch(s)")
    assert tree(work / "runs" / "ae") == before


def test_evaluate_refuses_partial_scores_unless_asked(work, capsys):
    refused(["evaluate", "data", "partial_scores"], capsys, "machine type valve has no scores", "--allow-partial")
    assert main(["evaluate", "data", "partial_scores", "--allow-partial"]) == 0
    out = capsys.readouterr().out
    assert "PARTIAL" in out and "machine type valve has no scores" in out


def test_config_with_the_wrong_types_is_one_line(work, capsys):
    refused(["score", "broken/machines_string", "data", "--out", "scored/x", "--quiet"], capsys,
            '"machines" must be a list, not "fan"')
    assert not (work / "scored" / "x").exists()


def test_files_honour_the_umask_and_keep_their_mode(work):
    from bench.bad_inputs_writes import umask_and_mode

    proc = umask_and_mode(work)
    assert proc.returncode == 0, proc.stderr


def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    from bench.bad_inputs_writes import _mounted

    with _mounted("ro") as point:
        return point is not None


@pytest.mark.skipif(not _can_mount(), reason="needs root and mount (CI runs as root)")
@pytest.mark.parametrize("name", ["train", "score", "bundle", "score-clips", "evaluate", "synth", "ensemble",
                                  "disk full"])
def test_read_only_and_full_file_systems_are_one_line(work, name):
    from bench.bad_inputs_writes import cases

    wanted = "disk full during train (64 KiB tmpfs)" if name == "disk full" else f"read-only file system: {name}"
    case = [c for c in cases() if c.name == wanted][0]
    before = tree(work)
    proc = case.args(work)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("error: ") and "Traceback" not in err and "Errno" not in err, err
    assert ("read-only" if name != "disk full" else "no space left") in err
    assert tree(work) == before


def test_bench_lists_every_case_of_issue_22():
    from bench import bad_inputs

    names = " ".join(c.name for c in bad_inputs.all_cases())
    for words in ("ensemble --out a member run folder", "evaluate --out a user's file", "ensemble --save a user's",
                  "team's results folder", "kill -9 during a re-score", "two trainings", "--resume --epochs 3",
                  "lacking a machine type", "read-only file system: score-clips", "disk full during train",
                  "under an existing file", "/proc/x", "\"machines\": \"fan\"", "umask"):
        assert words in names, words
