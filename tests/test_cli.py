"""CLI: every command has --help; synth/info/evaluate/runs work and fail clearly."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from asdcore.cli import main
from asdcore.data import discover
from asdcore.export import write_scores

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cmd", [[], ["synth"], ["info"], ["evaluate"], ["compare"], ["train"], ["score"], ["runs"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main(cmd + ["--help"])
    assert exc.value.code == 0
    assert "usage: python -m asdcore" in capsys.readouterr().out


def test_module_entry_point_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "asdcore", "info", str(tmp_path / "missing")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_synth_info_evaluate(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["synth", "--out", str(data), "--scale", "tiny", "--seed", "3", "--machines", "fan,gearbox",
                 "--workers", "1"]) == 0
    (data / "dev_data" / "raw" / "fan" / "train" / "stray.wav").write_text("x")
    capsys.readouterr()
    assert main(["info", str(data)]) == 0
    out = capsys.readouterr().out
    assert "2 machine type(s): fan, gearbox" in out and "noAttribute" in out
    assert "1 problem(s)" in out and "stray.wav" in out

    # scores that rank every anomaly above every normal -> AUC 1, pAUC 1, hmean 1
    ds = discover(data)
    scores_dir = tmp_path / "scores"
    for m in ds.machines():
        test = ds.select(machine=m, split="test")
        write_scores(scores_dir, m, "00", [c.file_name for c in test], [float(c.label) + 0.01 * i for i, c in enumerate(test)])
    assert main(["evaluate", str(data), str(scores_dir)]) == 0
    printed = capsys.readouterr().out
    assert "hmean" in printed and "100.00" in printed
    assert not (scores_dir / "metrics.csv").exists()  # without --out nothing is written into the given folder
    assert main(["evaluate", str(data), str(scores_dir), "--out", str(tmp_path / "metrics.csv")]) == 0
    table = pd.read_csv(tmp_path / "metrics.csv", dtype={"section": str}, keep_default_na=False)
    assert list(table.columns) == ["machine", "section", "auc_source", "auc_target", "pauc", "auc_all",
                                   "precision_source", "precision_target", "recall_source", "recall_target",
                                   "f1_source", "f1_target"]
    assert list(table["machine"]) == ["fan", "gearbox", "All", "hmean"]
    assert np.allclose(table[["auc_source", "auc_target", "pauc"]].to_numpy(dtype=float), 1.0)
    custom = tmp_path / "t.csv"
    assert main(["evaluate", str(data), str(scores_dir), "--out", str(custom)]) == 0
    assert custom.exists()

    # a missing clip is named
    first = sorted((scores_dir).glob("anomaly_score_fan_*.csv"))[0]
    first.write_text("".join(first.read_text().splitlines(keepends=True)[1:]))
    assert main(["evaluate", str(data), str(scores_dir)]) == 2
    assert "have no score" in capsys.readouterr().err


def test_evaluate_without_scores(tmp_path, capsys):
    data = tmp_path / "data"
    main(["synth", "--out", str(data), "--scale", "tiny", "--machines", "fan", "--workers", "1"])
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(data), str(tmp_path / "empty")]) == 2
    assert "anomaly_score" in capsys.readouterr().err


def test_runs_lists_nothing(tmp_path, capsys):
    assert main(["runs", str(tmp_path)]) == 0
    assert "no run folders" in capsys.readouterr().out


def test_bad_synth_args(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "x"), "--machines", "drone"]) == 2
    assert "drone" in capsys.readouterr().err


def test_evaluate_gives_the_evaluators_full_output_and_intervals(tiny_workspace, tmp_path, capsys):
    import re

    from asdcore.metrics import DECISION_COLUMNS, read_metrics_csv

    data, runs = tiny_workspace["data"], tiny_workspace["runs"]
    # a scored folder's metrics.csv holds precision/recall/F1 of its own decision files
    written = read_metrics_csv(runs / "ae" / "metrics.csv")
    assert written[list(DECISION_COLUMNS)].notna().all(axis=None) and written["auc_all"].notna().all()

    out = tmp_path / "m.csv"
    assert main(["evaluate", str(data), str(runs / "ae" / "scores"), "--out", str(out), "--ci", "--resamples", "200"]) == 0
    text = capsys.readouterr().out
    for expected in ("AUC(all)", "precision(source)", "F1(target)", "harmonic mean", "arithmetic mean",
                     "jackknife 95 % interval", "stratified bootstrap, 200 resamples (seed 0"):
        assert expected in text, expected
    score = 100 * float(written.loc[written["machine"] == "hmean", "pauc"].iloc[0])
    line = re.search(r"official score: ([0-9.]+) % \[([0-9.]+), ([0-9.]+)\]", text)
    assert line and float(line.group(1)) == round(score, 2)
    assert float(line.group(2)) <= float(line.group(1)) <= float(line.group(3))
    pd.testing.assert_frame_equal(read_metrics_csv(out), written)


def test_compare_two_scored_folders(tiny_workspace, capsys):
    import re

    runs = tiny_workspace["runs"]
    assert main(["compare", str(runs / "ae"), str(runs / "three-subnet"), "--resamples", "300"]) == 0
    text = capsys.readouterr().out
    assert "A: ae  official score" in text and "B: three-subnet  official score" in text
    assert re.search(r"B - A = [+-][0-9.]+ points \[[+-][0-9.]+, [+-][0-9.]+\]; (not )?significant at 95 %", text)
    assert main(["compare", str(runs / "ae"), str(runs / "ae"), "--resamples", "100"]) == 0
    assert "B - A = +0.0 points [+0.0, +0.0]; not significant at 95 %" in capsys.readouterr().out
    assert main(["compare", str(runs / "ae"), str(runs / "missing")]) == 2
    assert "error: " in capsys.readouterr().err
    assert main(["compare", str(runs / "ae"), str(runs / "three-subnet"), "--resamples", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
