"""Text that is safe to show and to open in a spreadsheet: escaped file names, formula-proof CSV cells.

Two things a table of clip names can carry that the person reading it never meant (issue 22):

* a file name whose bytes are not UTF-8 (Linux allows any bytes but ``/`` and NUL). Python holds such a
  name with lone surrogates (``'\\udcff'``), which cannot be printed or written as UTF-8, so one odd file
  aborted a whole batch. :func:`printable` shows those bytes escaped (``\\xff``), and control characters
  (a newline in a name) too, so every message stays one line;
* a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return, which Excel, LibreOffice and
  Google Sheets read as a formula (``=1+1_fan.wav``, or worse ``=HYPERLINK(...)``). :func:`spreadsheet_safe`
  writes such a *text* cell with a leading single quote, the usual defence (the spreadsheet then shows
  the text, the quote hidden). Numbers are never touched: a negative score stays a number.

Every CSV meant for spreadsheets (``score-clips --out``, the clip inspector's and the Results page's
downloads) goes through :func:`spreadsheet_safe`. The official DCASE score and decision files
(:mod:`asdcore.export`) do not: their format is fixed and read by the evaluator, not by a spreadsheet.
"""
from __future__ import annotations

import re
from typing import Any

import pandas as pd

#: A text cell starting with one of these is read as a formula by spreadsheets (OWASP's list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def printable(text: str) -> str:
    """``text`` with undecodable bytes (surrogates) and control characters as ``\\xNN`` escapes.

    A name read from the file system (``os.fsdecode``) keeps a non-UTF-8 byte as a surrogate; it is shown
    as the byte it stands for. Plain text comes back unchanged (the same object), so it costs nothing.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate that stands for no byte: escape the code point itself
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text) if _CONTROL.search(text) else text


def safe_cell(value: Any) -> Any:
    """A text cell as :func:`printable` text, quoted with ``'`` when a spreadsheet would read it as a formula;
    anything that is not text (numbers, NaN) unchanged."""
    if not isinstance(value, str):
        return value
    text = printable(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells and column names are :func:`safe_cell`; numeric columns as they are.

    Applied just before ``to_csv`` of every table meant for a spreadsheet; the frame shown on screen keeps
    the real names.
    """
    out = frame.copy()
    for column in out.columns:
        series = out[column]
        if pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_datetime64_any_dtype(series.dtype):
            continue
        out[column] = series.astype(object).map(safe_cell)
    out.columns = out.columns.map(lambda c: tuple(safe_cell(x) for x in c) if isinstance(c, tuple) else safe_cell(c))
    return out
