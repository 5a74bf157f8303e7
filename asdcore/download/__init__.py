"""``python -m asdcore download {dcase2024,weights}``: the real data and pre-trained weights in one command.

Modules: :mod:`~asdcore.download.transfer` (HTTP: resumed ``.part`` files, checksums, one-line network
errors), :mod:`~asdcore.download.records` (the three Zenodo records and the evaluator's ground truth),
:mod:`~asdcore.download.unpack` (zips checked member by member before anything is unpacked),
:mod:`~asdcore.download.dcase` (the run: claim, space, fetch, unpack, place, check with the loader),
:mod:`~asdcore.download.weights` (the SSL models from the Hugging Face hub). This module holds the
command's options and its handler, registered by :mod:`asdcore.cli_args` and :mod:`asdcore.cli`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asdcore.download.transfer import DownloadError, Network

__all__ = ["DownloadError", "add_download_parser", "cmd_download"]


def add_download_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``download`` command's sub-parser, with ``dcase2024`` and ``weights`` below it."""
    from asdcore.download.records import GROUND_TRUTH_URL, ZENODO_URL
    from asdcore.download.weights import HUB_URL, MODELS

    p = sub.add_parser("download", help="fetch the DCASE 2024 data set (official layout) or pre-trained SSL weights",
                       description="Fetch the real DCASE 2024 Task 2 data into the official layout, or the "
                                   "pre-trained SSL models into weights/. Resumable: run the same command again "
                                   "after an interruption; what is complete and checked is skipped.")
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    d = what.add_parser("dcase2024", help="development set, evaluation set and ground truth into one root",
                        description="Download the DCASE 2024 Task 2 development set (Zenodo record 10902294), the "
                                    "evaluation set's additional training data (11259435, latest revision of each "
                                    "zip) and test clips (11363076) into ROOT/dev_data/raw/ and ROOT/eval_data/raw/, "
                                    "and the official evaluator's ground truth into ROOT/ground_truth/. Every zip is "
                                    "checked against the record's size and checksum and its members before it is "
                                    "unpacked; the free disk space is checked first. Interrupted downloads resume.")
    d.add_argument("--out", required=True, metavar="ROOT",
                   help="the data root to fill (a new or empty folder, or an earlier download of this command)")
    d.add_argument("--splits", default=None, metavar="dev|eval|dev,eval",
                   help="which parts (default: both, or those of the --machines named)")
    d.add_argument("--machines", default=None,
                   help="comma-separated machine types (default: every type the records hold)")
    d.add_argument("--zenodo-url", default=ZENODO_URL,
                   help=f"Zenodo server; each record's metadata is read from <url>/api/records/<id> "
                        f"(default {ZENODO_URL})")
    d.add_argument("--ground-truth-url", default=GROUND_TRUTH_URL,
                   help="where the evaluator's ground_truth_{data,domain,attributes}/ folders are (default: the "
                        "raw files of nttcslab/dcase2024_task2_evaluator)")
    d.add_argument("--keep-zips", action="store_true",
                   help="keep the checked zips (in ROOT/.asd-download/zips/) instead of removing each once unpacked")
    d.add_argument("--retries", type=int, default=3,
                   help="more tries of a failed connection, each resuming where the last stopped (default 3)")
    d.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server (default 60)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    w = what.add_parser("weights", help="pre-trained SSL models from the Hugging Face hub into weights/<model>/",
                        description="Download pre-trained SSL models into <weights>/<model>/ (the folders the SSL "
                                    "systems read by default): hubert facebook/hubert-base-ls960, wav2vec2 "
                                    "facebook/wav2vec2-base, wavlm microsoft/wavlm-base-plus, unispeech-sat "
                                    "microsoft/unispeech-sat-base-plus. BEATs is not on the hub: the command says "
                                    "where its official checkpoint goes.")
    w.add_argument("models", nargs="+", metavar="MODEL",  # checked by the command: a bad name is one error line
                   help=f"{', '.join(MODELS)} or all")
    w.add_argument("--out", default=None, metavar="WEIGHTS",
                   help="the weights root (default: $ASD_WEIGHTS_DIR, else weights/ next to the asdcore package)")
    w.add_argument("--hub-url", default=HUB_URL, help=f"Hugging Face hub server (default {HUB_URL})")
    return p


def cmd_download(args: argparse.Namespace) -> int:
    """``download dcase2024 ...`` or ``download weights ...``."""
    if args.what == "weights":
        return _cmd_weights(args)
    return _cmd_dcase2024(args)


def _say(text: str) -> None:
    """A line on stdout that does not tear a progress bar on stderr."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stdout)
    sys.stdout.flush()


def _note(text: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"note: {text}", file=sys.stderr)


def _cmd_dcase2024(args: argparse.Namespace) -> int:
    from asdcore.download.dcase import Request, download_dcase2024
    from asdcore.download.records import parse_splits, select

    if args.retries < 0 or not args.timeout > 0:
        raise DownloadError("--retries must be 0 or more and --timeout above 0")
    splits = parse_splits(args.splits) if args.splits else None
    machines = [m.strip() for m in args.machines.split(",") if m.strip()] if args.machines else None
    request = Request(root=Path(args.out).expanduser(), selection=select(machines, splits),
                      zenodo_url=args.zenodo_url, ground_truth_url=args.ground_truth_url,
                      net=Network(timeout=args.timeout, retries=args.retries), keep_zips=args.keep_zips,
                      progress=not args.quiet)
    summary = download_dcase2024(request, _say, _note)
    for note in summary.notes:
        _note(note)
    print(f"{args.out}: {len(summary.fetched)} zip(s) fetched, {len(summary.skipped)} already there; "
          f"{len(summary.ground_truth)} ground-truth file(s) fetched")
    print(f"next: python -m asdcore info {args.out}")
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from asdcore import env
    from asdcore.download.weights import download_weights

    out_root = Path(args.out).expanduser() if args.out else env.weights_dir()
    written = download_weights(args.models, out_root, args.hub_url, _say)
    if written:
        where = "" if out_root.resolve() == env.weights_dir().resolve() else \
            f" once ASD_WEIGHTS_DIR={out_root} is set (or with --set weights={written[0]})"
        print(f"the SSL systems find them without any other step{where}, e.g.\n"
              f"  python -m asdcore train DATA --system {written[0].name}-kmeans --out runs/{written[0].name}")
    return 0
