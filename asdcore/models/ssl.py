"""Pre-trained self-supervised frontends: HuBERT, Wav2Vec 2.0, WavLM, UniSpeech-SAT and BEATs.

One interface for five backbones. A :class:`Backbone` turns a batch of equal-length 16 kHz
chunks ``(M, L)`` into frame features ``(M, T, D)``; :class:`SSLEmbedder` cuts clips into such
chunks, pools the frames into one vector per clip and (when fine-tuned) projects it linearly to
the embedding the sub-cluster AdaCos head is trained on.

* HuBERT, Wav2Vec 2.0, WavLM and UniSpeech-SAT: the ``transformers`` model classes
  (:class:`HFBackbone`); the output is the last hidden state (20 ms frames).
* BEATs: SpeechBrain's implementation (``speechbrain.lobes.models.beats``), wrapped in
  :mod:`asdcore.models.beats`.

Weights come from local files only; nothing is downloaded (see :func:`resolve_weights`):

* ``weights`` setting empty: ``$ASD_WEIGHTS_DIR/<model>`` (default ``<repo>/weights/<model>``), a
  folder in the Hugging Face format (``config.json`` + ``model.safetensors``); for BEATs a folder
  holding one official checkpoint ``*.pt``. Failing that, for the four ``transformers`` models,
  the default hub id (:data:`SPECS`) in the local Hugging Face cache (``local_files_only=True``).
* ``weights`` set: a folder (or, for BEATs, a ``.pt`` file), or a hub id looked up in the local
  cache only. An id that is not cached makes ``transformers`` raise ``OSError`` offline; that is
  turned into a :class:`WeightsError` that says where to put the files.

Untrusted files: ``transformers`` reads safetensors (or a ``.bin`` with ``weights_only=True``,
passed explicitly); BEATs checkpoints are read with ``torch.load(weights_only=True)``.

Long clips (memory bound): **chunking**, not cropping. A clip longer than ``chunk_seconds`` is
cut into ``ceil(N / L)`` windows of exactly ``L`` samples, evenly spaced from the start to the
end of the clip (the last windows overlap a little instead of being zero-padded, so every window
is real audio and all windows batch together without attention masks). Chunks pass through the
backbone at most ``max_chunks`` at a time and each is reduced at once to per-chunk frame
statistics, so memory is bounded by ``max_chunks x chunk_seconds`` whatever the clip length.
Cropping was rejected because an anomaly (a knock, a rattle) may sit anywhere in the clip;
chunking also keeps attention cost (quadratic in frames) fixed per chunk.

Pooling: ``mean`` of the frame features over all frames of all chunks of a clip (chunks have
equal length, so the mean of the chunk means is the mean over frames), or ``meanstd``: mean and
standard deviation concatenated. Mean pooling is the usual clip summary for machine sounds,
which are close to stationary; the standard deviation adds how much the frames vary.

Mixed precision: on a CUDA device, with ``amp``, the backbone runs under ``torch.autocast`` in
bfloat16 (float16 on GPUs without bfloat16; fine-tuning there has no loss scaling, so turn
``amp`` off if the loss misbehaves). Pooling, the projection input statistics and the loss run
in float32. CPUs run in float32: bfloat16 on CPU is slower than float32 on most CPUs.
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from asdcore import env

SAMPLE_RATE = 16000
SSL_MODELS = ("hubert", "wav2vec2", "wavlm", "unispeech-sat", "beats")
POOLINGS = ("mean", "meanstd")
#: attribute/config key that marks weights written by :func:`write_tiny_weights` (random, not pre-trained)
TINY_MARK = "asd_tiny_random"


class WeightsError(ValueError):
    """Pre-trained weights that are missing, unreadable or of the wrong model."""


@dataclass(frozen=True)
class ModelSpec:
    """What the code needs to know about one SSL model.

    ``hub_id``: the checkpoint looked up in the local Hugging Face cache when no folder is
    configured (the base-size public checkpoint). ``model_type``/``config_class``/``model_class``:
    the ``transformers`` names (None for BEATs). ``checkpoint``: the official file suggested for
    BEATs.
    """

    name: str
    title: str
    hub_id: str | None = None
    model_type: str | None = None
    config_class: str | None = None
    model_class: str | None = None
    checkpoint: str | None = None


SPECS: dict[str, ModelSpec] = {
    "hubert": ModelSpec("hubert", "HuBERT", "facebook/hubert-base-ls960", "hubert", "HubertConfig", "HubertModel"),
    "wav2vec2": ModelSpec("wav2vec2", "Wav2Vec 2.0", "facebook/wav2vec2-base", "wav2vec2", "Wav2Vec2Config",
                          "Wav2Vec2Model"),
    "wavlm": ModelSpec("wavlm", "WavLM", "microsoft/wavlm-base-plus", "wavlm", "WavLMConfig", "WavLMModel"),
    "unispeech-sat": ModelSpec("unispeech-sat", "UniSpeech-SAT", "microsoft/unispeech-sat-base-plus", "unispeech-sat",
                               "UniSpeechSatConfig", "UniSpeechSatModel"),
    "beats": ModelSpec("beats", "BEATs", checkpoint="BEATs_iter3_plus_AS2M.pt"),
}


def spec(model: str) -> ModelSpec:
    if model not in SPECS:
        raise ValueError(f"unknown SSL model {model!r}; known: {', '.join(SSL_MODELS)}")
    return SPECS[model]


# =========================================================================== weights locations


def weights_root() -> Path:
    """Folder holding one sub-folder of weights per model: ``$ASD_WEIGHTS_DIR``, else ``<repo>/weights``."""
    return env.weights_dir()


def default_location(model: str) -> Path:
    """Where the weights of ``model`` are looked for when the ``weights`` setting is empty."""
    spec(model)
    return weights_root() / model


def _hf_cache_dir() -> str | None:
    """The Hugging Face cache to search: ``HF_HUB_CACHE`` read now (None: the library default)."""
    return env.hf_hub_cache()


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights were found: ``kind`` is ``folder``, ``hf-cache`` or ``beats-file``."""

    model: str
    kind: str
    location: str

    def describe(self) -> str:
        where = {"folder": "folder", "hf-cache": "Hugging Face cache entry", "beats-file": "BEATs checkpoint"}[self.kind]
        return f"{spec(self.model).title} weights from {where} {self.location}"


def how_to_provide(model: str) -> str:
    """The sentence that tells a user where to put the weights of ``model``."""
    sp = spec(model)
    loc = default_location(model)
    if model == "beats":
        return (f"put an official BEATs checkpoint (e.g. {sp.checkpoint} from the microsoft/unilm BEATs page) in "
                f"{loc}/ (or set ASD_WEIGHTS_DIR, or pass --set weights=FILE.pt)")
    return (f"put a Hugging Face model folder (config.json + model.safetensors, e.g. {sp.hub_id}) in {loc}/, "
            f"or download {sp.hub_id} into the Hugging Face cache on a machine with internet access "
            f"(hf download {sp.hub_id}), or pass --set weights=FOLDER")


def _missing(model: str, why: str) -> WeightsError:
    return WeightsError(f"no {spec(model).title} weights: {why}. Nothing is downloaded at run time: "
                        f"{how_to_provide(model)}. To try the pipeline without real weights: "
                        f"python -m asdcore ssl-tiny --model {model} --out DIR, then --set weights=DIR")


def _beats_file_in(folder: Path, model: str) -> Path:
    found = sorted(p for p in folder.glob("*.pt") if p.is_file())
    if not found:
        raise _missing(model, f"folder {folder} holds no BEATs checkpoint (*.pt)")
    if len(found) > 1:
        raise WeightsError(f"{folder} holds several BEATs checkpoints ({', '.join(p.name for p in found)}); "
                           "choose one with --set weights=FILE.pt")
    return found[0]


def _local_source(model: str, path: Path) -> WeightsSource:
    path = path.resolve()
    if model == "beats":
        return WeightsSource(model, "beats-file", str(path if path.is_file() else _beats_file_in(path, model)))
    if path.is_file():
        raise WeightsError(f"{path} is a file; {spec(model).title} weights are a Hugging Face model folder "
                           "(config.json + model.safetensors)")
    if not (path / "config.json").is_file():
        raise _missing(model, f"folder {path} has no config.json (not a Hugging Face model folder)")
    return WeightsSource(model, "folder", str(path))


def _cached_hub_id(hub_id: str) -> bool:
    """Whether ``hub_id``'s config is in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(hub_id, "config.json", cache_dir=_hf_cache_dir())
    except ValueError:  # not a valid repo id
        return False
    return isinstance(hit, str)


def _looks_like_path(text: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else that does not exist is a missing path."""
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text or text.endswith(".pt")


def resolve_weights(model: str, weights: str | None = None) -> WeightsSource:
    """Find the weights of ``model`` on this machine (see the module docstring); never downloads.

    Raises :class:`WeightsError` with a sentence saying where to put them when none are found.
    """
    sp = spec(model)
    if weights:
        path = Path(str(weights)).expanduser()
        if path.exists():
            return _local_source(model, path)
        if model == "beats" or _looks_like_path(str(weights)):
            raise _missing(model, f"{path} does not exist")
        return WeightsSource(model, "hf-cache", str(weights))  # a hub id: checked when loading (OSError offline)
    default = default_location(model)
    if default.exists():
        return _local_source(model, default)
    if sp.hub_id and _cached_hub_id(sp.hub_id):
        return WeightsSource(model, "hf-cache", sp.hub_id)
    tried = f"nothing at {default}" + (f" and {sp.hub_id} is not in the Hugging Face cache" if sp.hub_id else "")
    raise _missing(model, tried)


# =========================================================================== backbones


class Backbone(nn.Module):
    """A pre-trained encoder: ``forward(chunks (M, L) float32, 16 kHz) -> frames (M, T, hidden_size)``.

    Subclasses set ``model`` (a key of :data:`SPECS`), ``hidden_size``, ``n_layers`` and
    ``min_samples`` (shortest input giving one frame), and implement :meth:`freeze`,
    :meth:`config_dict` (JSON-able; :func:`build_backbone` rebuilds the architecture from it) and
    :meth:`save` (the model's native on-disk format).
    """

    model: str
    hidden_size: int
    n_layers: int
    min_samples: int

    def freeze(self, feature_encoder: bool = True, layers: int = 0) -> None:
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, out: Path) -> Path:
        raise NotImplementedError

    @property
    def is_tiny_random(self) -> bool:
        """True for the random tiny weights of :func:`write_tiny_weights` (not pre-trained)."""
        raise NotImplementedError

    def _check_layers(self, layers: int) -> None:
        if not 0 <= layers <= self.n_layers:
            raise ValueError(f"freeze_layers must lie in [0, {self.n_layers}] for this {spec(self.model).title} "
                             f"model ({self.n_layers} transformer layers); got {layers}")


def _set_trainable(modules: list[nn.Module | nn.Parameter | None], trainable: bool) -> None:
    for m in modules:
        if m is None:
            continue
        params = [m] if isinstance(m, nn.Parameter) else list(m.parameters())
        for p in params:
            p.requires_grad_(trainable)


def _transformers_class(name: str):
    import transformers

    return getattr(transformers, name)


@contextlib.contextmanager
def _quiet_transformers():
    """Hide ``transformers``' per-file progress bars (loading a few files; they clutter ``--quiet`` runs)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _conv_min_samples(kernels: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """Shortest input for which a stack of unpadded 1-D convolutions yields one output frame."""
    n = 1
    for k, s in zip(reversed(kernels), reversed(strides)):
        n = (n - 1) * s + k
    return n


class HFBackbone(Backbone):
    """A ``transformers`` HuBERT / Wav2Vec2 / WavLM / UniSpeech-SAT model; output: last hidden state.

    ``normalize``: zero-mean unit-variance per chunk before the model, as the model's feature
    extractor does when its ``preprocessor_config.json`` says ``do_normalize`` (wav2vec2-base
    does, some checkpoints do not; the flag is read from the weights folder).
    """

    def __init__(self, model: str, net: nn.Module, normalize: bool):
        super().__init__()
        self.model = model
        self.net = net
        self.normalize = bool(normalize)
        cfg = net.config
        self.hidden_size = int(cfg.hidden_size)
        self.n_layers = int(cfg.num_hidden_layers)
        self.min_samples = _conv_min_samples(tuple(cfg.conv_kernel), tuple(cfg.conv_stride))

    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        x = chunks
        if self.normalize:
            # the feature extractor's formula: (x - mean) / sqrt(population variance + 1e-7)
            x = (x - x.mean(dim=-1, keepdim=True)) / torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=False) + 1e-7)
        return self.net(input_values=x).last_hidden_state

    def freeze(self, feature_encoder: bool = True, layers: int = 0) -> None:
        """Stop gradients into the convolutional feature encoder and/or the first ``layers`` layers.

        Freezing ``layers > 0`` also freezes what lies below layer 0: the feature projection, the
        mask embedding, the convolutional positional embedding and (post-norm models) the
        encoder's input layer norm, so the frozen part is one contiguous bottom of the network.
        """
        self._check_layers(layers)
        net = self.net
        if feature_encoder or layers > 0:
            # the encoder's own switch: with it left on, the encoder marks its input as requiring
            # grad in train mode and autograd would still keep its (large) activations
            net.feature_extractor._freeze_parameters()
        if layers > 0:
            below = [net.feature_projection, net.encoder.pos_conv_embed, getattr(net, "masked_spec_embed", None)]
            if not getattr(net.config, "do_stable_layer_norm", False):
                below.append(net.encoder.layer_norm)  # post-norm models normalise before layer 0
            _set_trainable(below + list(net.encoder.layers[:layers]), False)

    def config_dict(self) -> dict[str, Any]:
        return {"model": self.model, "normalize": self.normalize, "config": self.net.config.to_dict()}

    @property
    def is_tiny_random(self) -> bool:
        return bool(getattr(self.net.config, TINY_MARK, False))

    def save(self, out: Path) -> Path:
        """Write a Hugging Face model folder (config.json, model.safetensors, preprocessor_config.json).

        Written into a temporary folder beside ``out`` first, then each file is renamed into
        ``out`` (atomic per file; a crash never leaves a half-written weights file).
        """
        from transformers import Wav2Vec2FeatureExtractor

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".save-", dir=out) as tmp, _quiet_transformers():
            self.net.save_pretrained(tmp)
            Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                     do_normalize=self.normalize, return_attention_mask=False).save_pretrained(tmp)
            for f in sorted(Path(tmp).iterdir()):
                os.replace(f, out / f.name)
        return out


def _hf_normalize_flag(location: str) -> bool:
    """``do_normalize`` of the weights' preprocessor config; True (the extractor default) when absent."""
    from transformers import Wav2Vec2FeatureExtractor

    try:
        fe = Wav2Vec2FeatureExtractor.from_pretrained(location, local_files_only=True, cache_dir=_hf_cache_dir())
    except (OSError, ValueError):
        return True
    return bool(getattr(fe, "do_normalize", True))


def _load_hf(source: WeightsSource) -> HFBackbone:
    sp = spec(source.model)
    cfg_cls, model_cls = _transformers_class(sp.config_class), _transformers_class(sp.model_class)
    where = f"folder {source.location}" if source.kind == "folder" else f"hub id {source.location!r}"
    try:
        config = cfg_cls.from_pretrained(source.location, local_files_only=True, cache_dir=_hf_cache_dir())
    except OSError as exc:
        if source.kind == "hf-cache":
            raise _missing(source.model, f"there is no folder {source.location} and {where} is not in the local "
                                         f"Hugging Face cache ({type(exc).__name__}: {exc})") from None
        raise WeightsError(f"cannot read the {sp.title} config in {where}: {exc}") from None
    if getattr(config, "model_type", None) != sp.model_type:
        raise WeightsError(f"{where} holds a {getattr(config, 'model_type', 'unknown')!r} model, not {sp.title} "
                           f"({sp.model_type!r}); use the matching system or other weights")
    try:
        with _quiet_transformers():
            net = model_cls.from_pretrained(source.location, config=config, local_files_only=True,
                                            cache_dir=_hf_cache_dir(), dtype=torch.float32, weights_only=True)
    except OSError as exc:
        raise _missing(source.model, f"{where} has a config but no readable weights ({exc})") from None
    return HFBackbone(source.model, net.float(), _hf_normalize_flag(source.location))


def _hf_from_config(model: str, config: dict[str, Any], normalize: bool) -> HFBackbone:
    sp = spec(model)
    cfg = _transformers_class(sp.config_class).from_dict(dict(config))
    return HFBackbone(model, _transformers_class(sp.model_class)(cfg).float(), normalize)


# =========================================================================== configs, build, load, save


def hf_tiny_config(model: str) -> dict[str, Any]:
    """A few-layer, narrow config with the real conv-stack layout (so frames are still 20 ms).

    2 transformer layers, width 32, 2 heads, FFN 64, 32 conv channels, positional conv 16 wide
    in 4 groups; about 40 thousand parameters. Dropouts and masking keep their defaults so the
    fine-tuning code path is the same as for real weights.
    """
    base: dict[str, Any] = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    base[TINY_MARK] = True
    if model == "wavlm":
        base.update(num_buckets=32, max_bucket_distance=128)
    if model == "unispeech-sat":
        base.update(num_clusters=8)
    return base


def tiny_config(model: str) -> dict[str, Any]:
    """Keyword overrides of the tiny config of ``model`` (see :func:`hf_tiny_config`, :func:`asdcore.models.beats.tiny_cfg`)."""
    spec(model)
    if model == "beats":
        from asdcore.models.beats import tiny_cfg

        return tiny_cfg()
    return hf_tiny_config(model)


def build_backbone(model: str, config: dict[str, Any] | None = None, size: str | None = None,
                   normalize: bool = True) -> Backbone:
    """A randomly initialised backbone from ``config`` (a :meth:`Backbone.config_dict`'s ``config``)
    or from a named ``size``: ``tiny`` (:func:`tiny_config`) or ``base`` (each model's standard
    base config: the ``transformers`` config class defaults, 12 layers x 768; for BEATs see
    :func:`asdcore.models.beats.base_cfg`).
    """
    spec(model)
    if config is None:
        if size not in ("tiny", "base"):
            raise ValueError(f"give a config or size 'tiny' or 'base'; got size {size!r}")
        config = tiny_config(model) if size == "tiny" else None
    if model == "beats":
        from asdcore.models.beats import BEATsBackbone, base_cfg

        return BEATsBackbone.from_cfg(config if config is not None else base_cfg())
    if config is None:
        return HFBackbone(model, _transformers_class(spec(model).model_class)(
            _transformers_class(spec(model).config_class)()).float(), normalize)
    return _hf_from_config(model, config, normalize)


def rebuild_backbone(saved: dict[str, Any]) -> Backbone:
    """The architecture recorded by :meth:`Backbone.config_dict` (weights are loaded by the caller)."""
    try:
        model, config = saved["model"], saved["config"]
    except (KeyError, TypeError):
        raise WeightsError("backbone description lacks 'model' or 'config'") from None
    return build_backbone(model, config, normalize=bool(saved.get("normalize", True)))


def load_backbone(model: str, weights: str | None = None) -> tuple[Backbone, WeightsSource]:
    """The pre-trained backbone of ``model`` from local files (see :func:`resolve_weights`)."""
    source = resolve_weights(model, weights)
    if model == "beats":
        from asdcore.models.beats import load_checkpoint

        return load_checkpoint(Path(source.location)), source
    return _load_hf(source), source


def tiny_weights_path(model: str, out: Path) -> Path:
    """Where :func:`write_tiny_weights` puts ``model``'s files for ``out``: the folder, or for BEATs
    ``out/beats-tiny.pt`` (``out`` itself when it ends in ``.pt``)."""
    out = Path(out)
    if model == "beats":
        return out if out.suffix == ".pt" else out / "beats-tiny.pt"
    return out


def write_tiny_weights(model: str, out: Path, seed: int = 0) -> tuple[Path, Backbone]:
    """Write random tiny weights of ``model`` in its native format, loadable like real weights.

    HF models: a Hugging Face model folder; BEATs: a checkpoint file in the official format
    (``{"cfg": ..., "model": state_dict}``). The config carries ``asd_tiny_random: true`` so runs
    made from these weights say they are not pre-trained. Returns the path and the model.
    """
    torch.manual_seed(seed)
    backbone = build_backbone(model, size="tiny")
    return backbone.save(tiny_weights_path(model, out)), backbone


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (shared ones counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# =========================================================================== clip embedder


def chunk_starts(n: int, length: int) -> list[int]:
    """Start samples of the windows covering a clip of ``n`` samples with windows of ``length``.

    One window (the whole clip) when ``n <= length``; else ``ceil(n / length)`` windows evenly
    spread from 0 to ``n - length`` (the last one ends at the clip's end).
    """
    if n <= length:
        return [0]
    k = math.ceil(n / length)
    return [round(i * (n - length) / (k - 1)) for i in range(k)]


def autocast_for(device: torch.device, enabled: bool = True):
    """``torch.autocast`` for CUDA (bfloat16, else float16); a no-op context on CPU or when disabled."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


class SSLEmbedder(nn.Module):
    """Backbone + chunking + pooling (+ linear projection): ``forward(waves (B, N)) -> (B, embed_dim)``.

    ``embed_dim`` 0: no projection, the embedding is the pooled backbone features (frozen mode:
    a random projection would only distort them). Otherwise a bias-free linear layer maps the
    pooled features to ``embed_dim`` (the fine-tuned embedding, trained from scratch with the
    head's learning rate).
    """

    def __init__(self, backbone: Backbone, embed_dim: int = 0, pooling: str = "mean", chunk_seconds: float = 12.0,
                 amp: bool = True):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
        if embed_dim < 0:
            raise ValueError(f"embed_dim must be >= 0; got {embed_dim}")
        self.backbone = backbone
        self.pooling = pooling
        self.chunk_samples = int(round(chunk_seconds * SAMPLE_RATE))
        if self.chunk_samples < backbone.min_samples:
            raise ValueError(f"chunk_seconds {chunk_seconds} is shorter than the {backbone.min_samples} samples "
                             f"{spec(backbone.model).title} needs for one frame")
        self.amp = amp
        self.pooled_dim = backbone.hidden_size * (2 if pooling == "meanstd" else 1)
        self.proj = nn.Linear(self.pooled_dim, embed_dim, bias=False) if embed_dim else None

    @property
    def embed_dim(self) -> int:
        return self.proj.out_features if self.proj is not None else self.pooled_dim

    def chunks(self, waves: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(B * k, L)`` windows (clip-major) and ``k``, the windows per clip (see :func:`chunk_starts`)."""
        n = waves.shape[-1]
        length = min(n, self.chunk_samples)
        starts = chunk_starts(n, length)
        windows = torch.stack([waves[:, s:s + length] for s in starts], dim=1)  # (B, k, L)
        return windows.reshape(-1, length), len(starts)

    def pooled(self, waves: torch.Tensor, max_chunks: int | None = None) -> torch.Tensor:
        """Pooled backbone features ``(B, pooled_dim)`` in float32; ``max_chunks`` bounds one forward."""
        if waves.dim() != 2:
            raise ValueError(f"waves must be (batch, samples); got shape {tuple(waves.shape)}")
        if waves.shape[-1] < self.backbone.min_samples:
            raise ValueError(f"clips of {waves.shape[-1]} samples are too short for {spec(self.backbone.model).title} "
                             f"(at least {self.backbone.min_samples} samples, "
                             f"{self.backbone.min_samples / SAMPLE_RATE:.3f} s)")
        flat, k = self.chunks(waves.float())
        step = len(flat) if not max_chunks else max(1, int(max_chunks))
        means, squares = [], []
        for i in range(0, len(flat), step):
            with autocast_for(flat.device, self.amp):
                frames = self.backbone(flat[i:i + step])
            frames = frames.float()
            means.append(frames.mean(dim=1))
            if self.pooling == "meanstd":
                squares.append((frames * frames).mean(dim=1))
        b = waves.shape[0]
        mean = torch.cat(means).view(b, k, -1).mean(dim=1)
        if self.pooling == "mean":
            return mean
        var = torch.cat(squares).view(b, k, -1).mean(dim=1) - mean * mean
        return torch.cat([mean, torch.sqrt(var.clamp_min(1e-6))], dim=1)

    def forward(self, waves: torch.Tensor, max_chunks: int | None = None) -> torch.Tensor:
        pooled = self.pooled(waves, max_chunks)
        return self.proj(pooled) if self.proj is not None else pooled


def describe_backbone(backbone: Backbone) -> str:
    """One line: model, size and whether the weights are the random tiny ones."""
    kind = "random tiny weights, NOT pre-trained" if backbone.is_tiny_random else "pre-trained weights"
    return (f"{spec(backbone.model).title}: {backbone.n_layers} layers x {backbone.hidden_size}, "
            f"{count_parameters(backbone):,} parameters ({kind})")

