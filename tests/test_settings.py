"""--set values typed from the settings dataclass and checked before anything is written."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from asdcore.settings import SettingsError, build_settings, coerce, parse_items, parse_settings
from asdcore.systems import get_system
from asdcore.systems.autoencoder import AESettings
from asdcore.systems.three_subnet import ThreeSubnetSettings


@dataclass
class Toy:
    """A settings class of field types the systems may add later; nothing in asdcore.settings knows it."""

    epochs: int = 3
    lr: float = 0.1
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1, 2)
    limit: float | None = None
    label: str = "x"
    odd: int = 1

    def __post_init__(self) -> None:
        if self.odd % 2 == 0:
            raise ValueError(f"odd must be odd; got {self.odd}")


def test_values_are_typed_by_the_field_not_guessed():
    s = build_settings(Toy, parse_items(["epochs=5", "lr=1", "flag=yes", "mode=b", "sizes=3,4,5", "limit=none",
                                         "label=007", "odd=3"]))
    assert s == Toy(epochs=5, lr=1.0, flag=True, mode="b", sizes=(3, 4, 5), limit=None, label="007", odd=3)
    assert isinstance(s.lr, float) and isinstance(s.label, str)
    assert build_settings(Toy, {"limit": "0.5", "flag": "0"}).limit == 0.5
    assert build_settings(Toy, {"flag": "FALSE"}).flag is False


@pytest.mark.parametrize("item, words", [
    ("epochs=abc", "epochs must be an integer >= 1"),
    ("epochs=2.5", "epochs must be an integer >= 1"),
    ("epochs=0", "epochs must be an integer >= 1"),
    ("lr=-1", "lr must be a number > 0"),
    ("lr=nan", "lr must be a number > 0"),
    ("flag=maybe", "flag must be true or false"),
    ("mode=c", "mode must be one of a, b"),
    ("sizes=1,x", "sizes must be"),
    ("odd=2", "odd must be odd"),
    ("nope=1", "no setting(s) nope"),
])
def test_bad_values_are_one_line_naming_the_setting(item, words):
    with pytest.raises(SettingsError) as exc:
        build_settings(Toy, parse_items([item]))
    assert words in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("item, words", [
    ("epochs=abc", "epochs must be an integer >= 1"), ("epochs=2.5", "epochs must be an integer >= 1"),
    ("device=gpu", "device must be auto, cpu, cuda, cuda:N or mps"), ("lr=-1", "lr must be a number > 0"),
    ("batch_size=0", "batch_size must be an integer >= 1"), ("epochs=0", "epochs must be an integer >= 1"),
    ("n_mels=0", "n_mels must be an integer >= 1"), ("val_split=1", "val_split must be a number in [0, 1)"),
    ("parallel_machines=0", "parallel_machines must be an integer >= 1"), ("seed=-1", "seed must be an integer >= 0"),
])
def test_ae_settings_ranges(item, words):
    with pytest.raises(SettingsError, match=words.replace("(", r"\(").replace("[", r"\[").replace(")", r"\)")):
        get_system("ae-mse").settings(**parse_items([item]))


def test_three_subnet_settings_typed_including_its_own_checks():
    system = get_system("three-subnet-kmeans")
    with pytest.raises(SettingsError, match="featex must be true or false"):
        system.settings(featex="maybe")
    with pytest.raises(SettingsError, match="featex_partner must be one of 'batch', 'machine'"):
        system.settings(featex_partner="nobody")
    with pytest.raises(SettingsError, match="gmm_covariance must be one of full, tied, diag, spherical"):
        system.settings(gmm_covariance="round")
    s = system.settings(featex="true", pseudo_classes="4", device="cuda:1", mixup_prob="0")
    assert s.featex is True and s.pseudo_classes == 4 and s.device == "cuda:1" and s.mixup_prob == 0.0
    assert isinstance(s, ThreeSubnetSettings)


def test_typed_values_are_checked_too_and_legacy_numbers_accepted():
    """--epochs 0 arrives as an int; old configs stored guessed numbers (featex=1, a numeric weights path)."""
    with pytest.raises(SettingsError, match="epochs must be an integer >= 1"):
        get_system("ae-mse").settings(epochs=0)
    with pytest.raises(SettingsError, match="epochs must be"):
        coerce(AESettings, "epochs", True)
    assert coerce(ThreeSubnetSettings, "featex", 1) is True
    assert coerce(AESettings, "lr", 1) == 1.0


def test_parse_settings_alias_keeps_text_and_syntax_errors():
    alias = parse_settings  # the page and the benches call it with text only

    assert alias(["epochs=3", "featex-partner=machine"]) == {"epochs": "3", "featex_partner": "machine"}
    assert parse_settings(["epochs=3"], AESettings) == {"epochs": 3}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        alias(["epochs"])


def test_format_setting_round_trips():
    from asdcore.runs import format_setting

    s = ThreeSubnetSettings(featex=True, lr=0.0005, stft_time_pool="max")
    items = [format_setting(k, getattr(s, k)) for k in ("featex", "lr", "stft_time_pool", "epochs")]
    again = get_system("three-subnet-kmeans").settings(**parse_items(items))
    assert (again.featex, again.lr, again.stft_time_pool, again.epochs) == (True, 0.0005, "max", s.epochs)
