"""Environment variables are read in asdcore.env only; nothing patches sys.path."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from asdcore import env

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [*ROOT.glob("asdcore/**/*.py"), *ROOT.glob("pages/*.py"), *ROOT.glob("bench/*.py"), ROOT / "app.py"]
#: reading one variable (passing the whole environment on to a child, ``{**os.environ, ...}``, is fine)
READS = re.compile(r"os\.environ\.get\(|os\.environ\[|os\.getenv\(|environ\.get\(")


def test_only_env_reads_environment_variables():
    readers = [str(p.relative_to(ROOT)) for p in SOURCES if p.name != "env.py" and READS.search(p.read_text())]
    assert readers == []


def test_nothing_patches_sys_path():
    patched = [str(p.relative_to(ROOT)) for p in [*SOURCES, *ROOT.glob("tests/*.py")]
               if p.name != "test_env.py" and re.search(r"sys\.path\.(insert|append)", p.read_text())]
    assert patched == []


def test_every_accessor_is_in_the_table():
    doc = env.__doc__ or ""
    accessors = [name for name, value in vars(env).items()
                 if callable(value) and not name.startswith("_") and getattr(value, "__module__", "") == env.__name__]
    assert accessors and all(f":func:`{name}`" in doc for name in accessors)


def test_defaults_and_values(monkeypatch, tmp_path):
    for name in ("ASD_DEMO_DATA", "ASD_RUNS", "ASD_NO_DEMO", "ASD_WEIGHTS_DIR", "HF_HUB_CACHE", "ASDCORE_DEBUG",
                 "RANK", "WORLD_SIZE", "LOCAL_RANK", "TQDM_MININTERVAL"):
        monkeypatch.delenv(name, raising=False)
    assert env.demo_data_dir() == ROOT / "demo_data" and env.runs_dir() == ROOT / "runs"
    assert env.weights_dir() == ROOT / "weights" and env.hf_hub_cache() is None
    assert (env.no_demo(), env.debug(), env.distributed(), env.local_rank()) == (False, False, (0, 1), 0)
    assert env.tqdm_mininterval("2") == "2"
    monkeypatch.setenv("ASD_RUNS", str(tmp_path))
    monkeypatch.setenv("ASD_NO_DEMO", "1")
    monkeypatch.setenv("HF_HUB_CACHE", "")  # empty: the library's default cache
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TQDM_MININTERVAL", "20")
    assert env.runs_dir() == tmp_path and env.no_demo() and env.hf_hub_cache() is None
    assert env.distributed() == (1, 2) and env.tqdm_mininterval("2") == "20"


@pytest.mark.parametrize("value, shown", [("1", True), ("", False)])
def test_debug_flag_shows_the_traceback(monkeypatch, capsys, value, shown):
    from asdcore.cli import main

    monkeypatch.setenv("ASDCORE_DEBUG", value)
    if shown:
        with pytest.raises(Exception):
            main(["info", "/nonexistent/data"])
    else:
        assert main(["info", "/nonexistent/data"]) == 2
        assert capsys.readouterr().err.startswith("error: ")
