"""Settings from text and from stored configs: typed by the settings dataclass, checked before use.

``--set KEY=VALUE`` (CLI, app, benches) gives text; a run's ``config.json`` gives JSON values. Either
way the value is converted by the *declared type of the dataclass field* (``int``, ``float``,
``bool``, ``str``, ``tuple[...]``, ``Literal[...]``, ``X | None``), never guessed from the text: a
guess stored ``featex=maybe`` as a string that counted as true, and ``epochs=2.5`` as a float that
broke training an hour later. Ranges of the settings that several systems share (epochs, lr, batch
size, ...) are checked here, from :data:`RANGES`; anything specific to one system is checked by its
settings' ``__post_init__`` (a ``ValueError`` there is reported the same way). Every refusal is one
:class:`SettingsError` line naming the setting and what it accepts, raised before anything is written.

New fields of a settings dataclass need nothing here: their type is read from the dataclass.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")
NONE_WORDS = ("none", "null")
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class SettingsError(ValueError):
    """A setting that cannot be used; the message names it and what it accepts."""


@dataclass(frozen=True)
class Bound:
    """A numeric range: ``low``/``high`` (None = open), inclusive unless ``*_open``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        return "any value"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


AT_LEAST_1 = Bound(1)
NON_NEGATIVE = Bound(0)
POSITIVE = Bound(0, low_open=True)
FRACTION = Bound(0, 1)

#: Ranges of settings several systems share, by field name (a field of another name is only typed).
RANGES: dict[str, Bound] = {
    "epochs": AT_LEAST_1, "batch_size": AT_LEAST_1, "embed_batch_size": AT_LEAST_1,
    "lr": POSITIVE, "backbone_lr": POSITIVE,
    "n_mels": AT_LEAST_1, "n_fft": AT_LEAST_1, "hop_length": AT_LEAST_1, "n_frames": AT_LEAST_1,
    "val_split": Bound(0, 1, high_open=True), "mixup_prob": FRACTION,
    "seed": NON_NEGATIVE, "parallel_machines": AT_LEAST_1, "num_workers": NON_NEGATIVE,
    "clip_seconds": POSITIVE, "chunk_seconds": POSITIVE,
    "n_subclusters": AT_LEAST_1, "kmeans_clusters": AT_LEAST_1, "gmm_components": AT_LEAST_1,
    "pseudo_classes": NON_NEGATIVE, "freeze_layers": NON_NEGATIVE, "embed_dim": NON_NEGATIVE,
    "kept_heap_gib": NON_NEGATIVE,
}

#: Settings with a fixed set of values (checked here so the message lists them).
CHOICES: dict[str, tuple[str, ...]] = {
    "gmm_covariance": ("full", "tied", "diag", "spherical"),
}


# --------------------------------------------------------------------------- text


def parse_items(items: Iterable[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (the ``--set`` syntax) -> ``{key: text}``; ``-`` in keys becomes ``_``.

    Values stay text: :func:`build_settings` types them by the settings class they are meant for.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).strip().partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"a setting must look like KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def parse_settings(items: Iterable[str], settings_cls: type | None = None) -> dict[str, Any]:
    """``--set`` items as a dict: text values, or typed and checked ones when ``settings_cls`` is given."""
    raw = parse_items(items)
    if settings_cls is None:
        return raw
    return {k: coerce(settings_cls, k, v) for k, v in raw.items()}


# --------------------------------------------------------------------------- typing


def field_types(settings_cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a settings dataclass."""
    hints = typing.get_type_hints(settings_cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(settings_cls)}


def expected(tp: Any, name: str = "") -> str:
    """What a field accepts, in words (for messages)."""
    bound = RANGES.get(name)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if name == "device":
        return "auto, cpu, cuda, cuda:N or mps"
    if name in CHOICES:
        return "one of " + ", ".join(CHOICES[name])
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(expected(a, name) for a in inner) + (" or none" if type(None) in args else "")
    if tp is bool:
        return "true or false (also 1/0, yes/no)"
    if tp is int:
        return "an integer" + (f" {bound.describe()}" if bound else "")
    if tp is float:
        return "a number" + (f" {bound.describe()}" if bound else "")
    if origin in (tuple, list):
        return "comma-separated values"
    return "text"


def _fail(name: str, value: Any, tp: Any) -> SettingsError:
    return SettingsError(f"setting {name}={value!r} is invalid: {name} must be {expected(tp, name)}")


def _convert(tp: Any, name: str, value: Any) -> Any:
    """``value`` (text or a JSON value) as type ``tp``; SettingsError when it is not one."""
    origin = typing.get_origin(tp)
    text = value.strip() if isinstance(value, str) else None
    if origin in (typing.Union, types.UnionType):
        return _to_union(tp, name, value, text)
    if origin is typing.Literal:
        return _to_literal(tp, name, value, text)
    if origin in (tuple, list):
        return _to_sequence(tp, name, value, text)
    scalar = _SCALARS.get(tp)
    if scalar is None:
        return value  # Any or a type this module does not know: passed on as given
    converted = scalar(value, text)
    if converted is _INVALID:
        raise _fail(name, value, tp)
    return converted


def _to_union(tp: Any, name: str, value: Any, text: str | None) -> Any:
    args = typing.get_args(tp)
    if type(None) in args and (value is None or (text is not None and text.lower() in NONE_WORDS)):
        return None
    for inner in (a for a in args if a is not type(None)):
        try:
            return _convert(inner, name, value)
        except SettingsError:
            continue
    raise _fail(name, value, tp)


def _to_literal(tp: Any, name: str, value: Any, text: str | None) -> Any:
    for choice in typing.get_args(tp):
        if value == choice or (text is not None and text == str(choice)):
            return choice
    raise _fail(name, value, tp)


def _to_sequence(tp: Any, name: str, value: Any, text: str | None) -> tuple | list:
    """Comma-separated text or a JSON list as ``tuple[...]``/``list[...]``, each item converted."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    parts = [p for p in text.split(",")] if text is not None else list(value) if isinstance(value, (list, tuple)) else None
    if parts is None:
        raise _fail(name, value, tp)
    if text is not None and text == "":
        parts = []
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(parts) != len(args):
            raise SettingsError(f"setting {name}={value!r} is invalid: {name} needs {len(args)} comma-separated values")
        return tuple(_convert(a, name, p) for a, p in zip(args, parts))
    inner = args[0] if args else Any
    items = [_convert(inner, name, p) for p in parts]
    return tuple(items) if origin is tuple else items


_INVALID = object()  # what a scalar converter returns for a value it cannot take


def _to_bool(value: Any, text: str | None) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # configs written when 1/0 were stored as numbers
        return bool(value)
    if text is not None and text.lower() in TRUE_WORDS + FALSE_WORDS:
        return text.lower() in TRUE_WORDS
    return _INVALID


def _to_int(value: Any, text: str | None) -> Any:
    if isinstance(value, bool):
        return _INVALID
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if text is not None and re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    return _INVALID


def _to_float(value: Any, text: str | None) -> Any:
    if isinstance(value, bool):
        return _INVALID
    if isinstance(value, (int, float)):
        number = float(value)
    elif text is not None:
        try:
            number = float(text)
        except ValueError:
            return _INVALID
    else:
        return _INVALID
    return number if math.isfinite(number) else _INVALID


def _to_str(value: Any, text: str | None) -> Any:
    if isinstance(value, str):
        return text if text is not None else value
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # legacy configs (guessed numbers)
        return str(value)
    return _INVALID


_SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def _check_range(name: str, value: Any, tp: Any) -> None:
    if name == "device" and isinstance(value, str) and not DEVICE.match(value):
        raise _fail(name, value, tp)
    if name in CHOICES and isinstance(value, str) and value not in CHOICES[name]:
        raise _fail(name, value, tp)
    bound = RANGES.get(name)
    if bound is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and not bound.holds(value):
        raise _fail(name, value, tp)


def coerce(settings_cls: type, name: str, value: Any) -> Any:
    """One setting typed by ``settings_cls``'s field and checked against its range."""
    types_ = field_types(settings_cls)
    if name not in types_:
        raise SettingsError(f"unknown setting {name!r}; known: {', '.join(sorted(types_))}")
    typed = _convert(types_[name], name, value)
    _check_range(name, typed, types_[name])
    return typed


def build_settings(settings_cls: type, values: Mapping[str, Any], owner: str | None = None) -> Any:
    """A ``settings_cls`` from text or JSON values: typed, range-checked, then its own ``__post_init__``.

    ``owner`` (a system name) goes into the unknown-setting message. Raises :class:`SettingsError`.
    """
    types_ = field_types(settings_cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        who = f"{owner} has" if owner else "there is"
        raise SettingsError(f"{who} no setting(s) {', '.join(unknown)}; known: {', '.join(sorted(types_))}")
    typed = {k: coerce(settings_cls, k, v) for k, v in values.items()}
    try:
        return settings_cls(**typed)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"invalid settings: {exc}") from None
