"""The seed report's four ensembles (its Table 3), chosen from whatever members exist.

``ensemble-1`` three-subnetworks variants; ``ensemble-2`` three-subnetworks + every pre-trained SSL
model (HuBERT, BEATs, wav2vec 2.0, WavLM, UniSpeech-SAT); ``ensemble-3`` three-subnetworks + the
pre-trained model with the best official hmean (from its ``metrics.csv``); ``ensemble-4`` every member
whose hmean reaches a quality cut (default: the median of the members' hmeans), combined equally.
Each returns the members and weights it chose and a sentence saying why.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

from asdcore.ensemble.members import Member

THREE_SUBNET_PREFIX = "three-subnet"
SSL_PREFIXES = ("hubert", "beats", "wav2vec2", "wavlm", "unispeech-sat")
PRESETS = ("ensemble-1", "ensemble-2", "ensemble-3", "ensemble-4")
PRESET_HELP = {
    "ensemble-1": "three-subnetworks variants (systems named three-subnet*), equal weights",
    "ensemble-2": "three-subnetworks + every pre-trained SSL model (hubert/beats/wav2vec2/wavlm/unispeech-sat*), equal weights",
    "ensemble-3": "three-subnetworks + the pre-trained model with the best official hmean, equal weights",
    "ensemble-4": "members whose official hmean reaches a quality cut (default: their median), equal weights",
}


@dataclass
class Selection:
    """What a preset chose: member names, equal weights and a sentence explaining the choice."""

    preset: str
    members: list[str]
    weights: list[float]
    explanation: str


def canonical_preset(preset: str) -> str:
    """``ensemble-N`` for a preset given as ``ensemble-N``, ``N``, ``eN``, ``ensembleN`` or ``e-N``."""
    text = str(preset).strip().lower().replace("_", "-").replace(" ", "-")
    aliases = {p: p for p in PRESETS}
    for i, p in enumerate(PRESETS, 1):
        aliases.update({str(i): p, f"e{i}": p, f"ensemble{i}": p, f"e-{i}": p})
    if text not in aliases:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)} (or 1-4)")
    return aliases[text]


def member_kind(member: Member) -> str:
    """The name the presets match on: the system name, else the member name."""
    return (member.system or member.name).lower()


def is_three_subnet(member: Member) -> bool:
    return member_kind(member).startswith(THREE_SUBNET_PREFIX)


def is_pretrained(member: Member) -> bool:
    return member_kind(member).startswith(SSL_PREFIXES)


def _fmt_h(value: float | None) -> str:
    return "no metrics.csv" if value is None else f"hmean {100 * value:.2f} %"


def _names(members: Sequence[Member]) -> str:
    return ", ".join(m.name for m in members)


@dataclass
class _Pool:
    """The members a preset chooses from, sorted into the families the presets name."""

    preset: str
    members: list[Member]
    subnet: list[Member]
    ssl: list[Member]
    note_unknown: str

    @classmethod
    def of(cls, members: Sequence[Member], preset: str) -> "_Pool":
        unknown = [m.name for m in members if m.system is None]
        note = f" (system unknown for {', '.join(unknown)}: matched by name)" if unknown else ""
        return cls(preset, list(members), [m for m in members if is_three_subnet(m)],
                   [m for m in members if is_pretrained(m)], note)

    def fail(self, what: str) -> ValueError:
        present = ", ".join(f"{m.name} ({m.system or 'system unknown'})" for m in self.members) or "none"
        return ValueError(f"{self.preset}: {what}; members present: {present}")

    def done(self, chosen: list[Member], text: str) -> Selection:
        n = len(chosen)
        return Selection(self.preset, [m.name for m in chosen], [1.0 / n] * n, text + self.note_unknown)


def _ensemble_1(pool: _Pool, quality_cut: float | None) -> Selection:
    if not pool.subnet:
        raise pool.fail("no three-subnetworks systems (names starting with 'three-subnet')")
    return pool.done(pool.subnet, f"ensemble-1: the {len(pool.subnet)} three-subnetworks variant(s) "
                                  f"{_names(pool.subnet)}, equal weights")


def _ensemble_2(pool: _Pool, quality_cut: float | None) -> Selection:
    subnet, ssl = pool.subnet, pool.ssl
    if not subnet and not ssl:
        raise pool.fail("neither three-subnetworks systems nor pre-trained models (" + ", ".join(SSL_PREFIXES) + ")")
    missing = [p for p in SSL_PREFIXES if not any(member_kind(m).startswith(p) for m in ssl)]
    text = (f"ensemble-2: three-subnetworks {_names(subnet) or 'none present'} + "
            f"pre-trained {_names(ssl) or 'none present'}, equal weights")
    if missing:
        text += f"; pre-trained models not present: {', '.join(missing)}"
    return pool.done(subnet + ssl, text)


def _ensemble_3(pool: _Pool, quality_cut: float | None) -> Selection:
    subnet, ssl = pool.subnet, pool.ssl
    rated = [m for m in ssl if m.hmean is not None]
    if not subnet and not rated:
        raise pool.fail("no three-subnetworks systems and no pre-trained model with metrics.csv")
    if rated:
        best = max(rated, key=lambda m: m.hmean)  # first of equals, in member order
        ranking = ", ".join(f"{m.name} {100 * m.hmean:.2f} %" for m in sorted(rated, key=lambda m: -m.hmean))
        text = (f"ensemble-3: three-subnetworks {_names(subnet) or 'none present'} + "
                f"the best pre-trained model {best.name} (official hmean from metrics.csv: {ranking})")
        unrated = [m.name for m in ssl if m.hmean is None]
        if unrated:
            text += f"; not rated (no metrics.csv): {', '.join(unrated)}"
        return pool.done(subnet + [best], text + ", equal weights")
    why = ("no pre-trained models present" if not ssl else
           f"no pre-trained model has metrics.csv ({_names(ssl)}), so none can be called best")
    return pool.done(subnet, f"ensemble-3: {why}; using the three-subnetworks members only "
                             f"({_names(subnet)}), equal weights")


def _quality_cut(rated: Sequence[Member], quality_cut: float | None) -> tuple[float, str]:
    """The hmean cut of ensemble-4 and how it was set (the members' median unless given)."""
    if quality_cut is None:
        cut = float(statistics.median(m.hmean for m in rated))
        return cut, f"the median of the members' hmeans, {100 * cut:.2f} %"
    cut = float(quality_cut)
    if not math.isfinite(cut):
        raise ValueError(f"quality cut must be a finite hmean fraction, got {quality_cut!r}")
    return cut, f"the given threshold {100 * cut:.2f} %"


def _ensemble_4(pool: _Pool, quality_cut: float | None) -> Selection:
    rated = [m for m in pool.members if m.hmean is not None]
    if not rated:
        raise pool.fail("no member has a metrics.csv with an official hmean, so no quality cut can be applied")
    cut, how = _quality_cut(rated, quality_cut)
    kept = [m for m in rated if m.hmean >= cut]
    dropped = [m for m in rated if m.hmean < cut]
    if not kept:
        raise pool.fail(f"no member reaches the quality cut {100 * cut:.2f} % "
                        f"({', '.join(f'{m.name} {_fmt_h(m.hmean)}' for m in rated)})")
    text = (f"ensemble-4: kept members with official hmean >= {how}: "
            f"{', '.join(f'{m.name} ({100 * m.hmean:.2f} %)' for m in kept)}; dropped "
            f"{', '.join(f'{m.name} ({100 * m.hmean:.2f} %)' for m in dropped) or 'none'}")
    unrated = [m.name for m in pool.members if m.hmean is None]
    if unrated:
        text += f"; left out for lack of metrics.csv: {', '.join(unrated)}"
    return pool.done(kept, text + "; equal weights")


_CHOOSERS: dict[str, Callable[[_Pool, float | None], Selection]] = {
    "ensemble-1": _ensemble_1, "ensemble-2": _ensemble_2, "ensemble-3": _ensemble_3, "ensemble-4": _ensemble_4,
}


def select_preset(members: Sequence[Member], preset: str, quality_cut: float | None = None) -> Selection:
    """Choose members (equal weights) for one of the seed's four ensembles; see :data:`PRESET_HELP`.

    Matching uses each member's system name (its folder name when the system is unknown):
    three-subnetworks = names starting with ``three-subnet``; pre-trained = names starting with
    one of :data:`SSL_PREFIXES`. ``quality_cut`` (a fraction, e.g. 0.6) applies to ensemble-4; its
    default is the median hmean of the members that have one. ``ensemble-3`` and ``ensemble-4``
    judge members by the hmean in their ``metrics.csv`` - a choice made with test labels, so the
    resulting figure on that same set is optimistic. Raises ValueError, listing the members present,
    when nothing fits.
    """
    preset = canonical_preset(preset)
    if not members:
        raise ValueError("no ensemble members given")
    return _CHOOSERS[preset](_Pool.of(members, preset), quality_cut)
