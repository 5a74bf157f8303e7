"""``download weights``: the pre-trained SSL models from the Hugging Face hub into ``weights/<model>/``.

Why here and not at run time: training and scoring never touch the network (README, "Where the weights
go"); this command is the one step that does, on a machine with internet access. It writes the folders
the systems look in by default (``$ASD_WEIGHTS_DIR`` or ``<repo>/weights``), with the repository ids the
systems know (:data:`asdcore.models.ssl.SPECS`), through ``huggingface_hub`` (installed with
``transformers``), which resumes an interrupted file and skips a complete one.

Each folder is claimed through :mod:`asdcore.outputs` (kind ``weights-download``): new, empty, or an earlier
download of this command (its marker :data:`MARKER`); a folder of the user's own weights or of ``ssl-tiny``'s
random ones is refused. Only the files a model folder needs are fetched: ``config.json``, the weights
(``model.safetensors``, else ``pytorch_model.bin``) and ``preprocessor_config.json`` where the repository has
one. BEATs is not on the hub: the command says where its official checkpoint goes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from asdcore.atomic import atomic_write_text
from asdcore.download.transfer import DownloadError, check_url
from asdcore.outputs import claim_folder

HUB_URL = "https://huggingface.co"
MADE_BY = "asdcore download weights"
MARKER = ".asdcore_weights.json"
#: The weights file of a model folder, in order of preference (safetensors is read without unpickling).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
OPTIONAL_FILES = ("preprocessor_config.json",)
#: The models this command can name (``all``: every one).
MODELS = ("hubert", "wav2vec2", "wavlm", "unispeech-sat", "beats")


def is_weights_folder(path: Path) -> bool:
    """Whether ``path`` is a folder this command wrote (its marker says so): the output guard's test."""
    try:
        data = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("made_by") == MADE_BY


def resolve_models(names: Sequence[str]) -> list[str]:
    """The models to fetch, in the order given (``all``: every model), each once; an unknown name is refused."""
    out: list[str] = []
    for name in names:
        for model in (MODELS if name == "all" else (name,)):
            if model not in MODELS:
                raise DownloadError(f"unknown model {model!r}; choose from {', '.join(MODELS)} or all")
            if model not in out:
                out.append(model)
    return out


def choose_files(listing: Sequence[str], repo_id: str) -> list[str]:
    """The files of ``repo_id`` a model folder needs, from the repository's listing."""
    have = set(listing)
    if "config.json" not in have:
        raise DownloadError(f"{repo_id}: the repository has no config.json; not a transformers model")
    weights = next((f for f in WEIGHT_FILES if f in have), None)
    if weights is None:
        raise DownloadError(f"{repo_id}: the repository has none of {', '.join(WEIGHT_FILES)}")
    return ["config.json", weights] + [f for f in OPTIONAL_FILES if f in have]


def beats_line(out_root: Path) -> str:
    """Where the official BEATs checkpoint goes (BEATs is not on the Hugging Face hub)."""
    from asdcore.models.ssl import SPECS

    return (f"beats: not on the Hugging Face hub, nothing fetched: put the official checkpoint "
            f"({SPECS['beats'].checkpoint}, from the BEATs page of the microsoft/unilm repository on GitHub) in "
            f"{out_root / 'beats'}/ (exactly one *.pt file there)")


def download_weights(models: Sequence[str], out_root: Path, hub_url: str, say: Callable[[str], None]) -> list[Path]:
    """Fetch each model's files into ``out_root/<model>/``; returns the folders written.

    Every folder is claimed before the first file is fetched, so a refused one stops the command before
    any download.
    """
    from asdcore.models.ssl import SPECS

    check_url(hub_url, "--hub-url")
    chosen = resolve_models(models)
    targets = {m: claim_folder(out_root / m, "weights-download") for m in chosen if m != "beats"}
    written = []
    for model in chosen:
        if model == "beats":
            say(beats_line(out_root))
            continue
        repo_id = SPECS[model].hub_id
        written.append(fetch_model(model, repo_id, targets[model], hub_url, say))
    return written


def fetch_model(model: str, repo_id: str, target: Path, hub_url: str, say: Callable[[str], None]) -> Path:
    """Fetch ``repo_id``'s model files into ``target`` (resumed and skipped by ``huggingface_hub``)."""
    target.mkdir(parents=True, exist_ok=True)
    if not is_weights_folder(target):
        atomic_write_text(target / MARKER, json.dumps({"made_by": MADE_BY, "model": model, "repo_id": repo_id},
                                                      indent=1) + "\n")
    files = choose_files(_hub_call(lambda api: api.list_repo_files(repo_id), repo_id, hub_url), repo_id)
    for name in files:
        _hub_call(lambda api: _hf_download(repo_id, name, target, hub_url), repo_id, hub_url, name)
    say(f"{model}: {repo_id} -> {target}/ ({', '.join(files)})")
    return target


def _hf_download(repo_id: str, name: str, target: Path, hub_url: str) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id, name, local_dir=target, endpoint=hub_url)


def _hub_call(action: Callable, repo_id: str, hub_url: str, name: str | None = None):
    """Run one ``huggingface_hub`` call; any failure is one line naming the repository (and file) and the hub.

    The library raises many types (HTTP errors, connection errors, its offline and repository errors), and
    each means "this could not be fetched": all of them become a :class:`DownloadError`. Ctrl-C is not an
    ``Exception`` and stops the command as everywhere else.
    """
    from huggingface_hub import HfApi

    try:
        return action(HfApi(endpoint=hub_url))
    except Exception as exc:  # noqa: BLE001 - see the docstring
        what = f"{repo_id}/{name}" if name else repo_id
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise DownloadError(f"{what} from {hub_url}: {text[:300]} (run the command again to continue)") from None
