"""BEATs behind the :class:`asdcore.models.ssl.Backbone` interface, using SpeechBrain's implementation.

SpeechBrain (``speechbrain.lobes.models.beats.BEATs``) reads the official BEATs checkpoint
format, a ``torch.save``'d dict ``{"cfg": {...}, "model": state_dict}``, and computes the
128-bin Kaldi filter banks itself. Its quirks, and what this wrapper does about them:

* ``extract_features`` needs ``wav_lens``: without it the padding mask is an unbound local
  variable (``UnboundLocalError``). The wrapper always passes ``wav_lens`` = 1 (every chunk is
  full length; :class:`asdcore.models.ssl.SSLEmbedder` never pads).
* The constructor takes its config only from a checkpoint file it loads itself with a bare
  ``torch.load(path)`` (no ``weights_only``, no ``map_location``). We never give it a path: the
  checkpoint is read here with ``torch.load(weights_only=True, map_location="cpu")`` (a file that
  needs pickled code is refused), and the network is built from the ``cfg`` dict by swapping the
  module's ``BEATsConfig`` for one pre-filled with that dict while the constructor runs (under a
  lock; see :func:`_build_net`). This also builds random tiny/base models without any file.
* ``freeze=True`` (its default) wraps the forward in ``no_grad``; we construct with
  ``freeze=False`` and freeze parameters ourselves (:meth:`BEATsBackbone.freeze`).
* The filter banks scale the wave by 2**15 and take a power spectrum: under float16 autocast
  that overflows. :class:`BEATsNet` computes them in float32 with autocast disabled.
* The relative position bias is one module shared by all layers, so the state dict holds the
  same tensor under several names; callers that write safetensors must clone the tensors.
* The last hidden state is ``(chunks, patches, D)`` with patches of 16 fbank frames x 16 mel
  bins (160 ms x 8 bands, flattened time-major), pooled like the frames of the other models.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from asdcore.atomic import atomic_path
from asdcore.models.ssl import TINY_MARK, Backbone, WeightsError, _set_trainable

# Kaldi fbank framing used by BEATs: 25 ms windows, 10 ms hop at 16 kHz
_FRAME, _HOP = 400, 160
_BUILD_LOCK = threading.Lock()


def _sb():
    from speechbrain.lobes.models import beats as sb_beats

    return sb_beats


def base_cfg() -> dict[str, Any]:
    """The BEATs base size: SpeechBrain's ``BEATsConfig`` defaults (12 layers x 768, FFN 3072,
    12 heads, 16x16 patches embedded to 512) with the structure of the released iter3 checkpoints
    (relative position bias of 320 buckets up to distance 800, gated relative position, deep
    norm)."""
    cfg = dict(_sb().BEATsConfig().__dict__)
    cfg.update(relative_position_embedding=True, num_buckets=320, max_distance=800, gru_rel_pos=True,
               deep_norm=True, layer_norm_first=False)
    return cfg


def tiny_cfg() -> dict[str, Any]:
    """A 2-layer, 32-wide BEATs with the base structure (patches, relative bias, deep norm)."""
    cfg = base_cfg()
    cfg.update(embed_dim=32, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
               encoder_attention_heads=2, conv_pos=16, conv_pos_groups=4, num_buckets=32, max_distance=128)
    cfg[TINY_MARK] = True
    return cfg


def _net_class():
    sb = _sb()

    class BEATsNet(sb.BEATs):
        """SpeechBrain's BEATs with the filter banks computed in float32 outside autocast."""

        def preprocess(self, source: torch.Tensor, fbank_mean: float = 15.41663, fbank_std: float = 6.55582):
            with torch.autocast(device_type=source.device.type, enabled=False):
                return super().preprocess(source.float(), fbank_mean, fbank_std)

    return BEATsNet


def _build_net(cfg: dict[str, Any]):
    """A randomly initialised SpeechBrain BEATs network of config ``cfg`` (no file read).

    The constructor only accepts a checkpoint *path*; it instantiates the module-level
    ``BEATsConfig`` with the checkpoint's cfg, so that name is pointed at a config class
    pre-filled with ``cfg`` for the duration of the constructor (a lock keeps concurrent builds
    apart), then restored.
    """
    sb = _sb()
    original = sb.BEATsConfig

    class _Preset(original):
        def __init__(self, _cfg=None):
            super().__init__(cfg)

    with _BUILD_LOCK:
        sb.BEATsConfig = _Preset
        try:
            net = _net_class()(ckp_path=None, freeze=False, output_all_hiddens=False)
        finally:
            sb.BEATsConfig = original
    net.cfg = original(cfg)
    return net


class BEATsBackbone(Backbone):
    """BEATs: ``forward(chunks (M, L)) -> (M, patches, encoder_embed_dim)``."""

    def __init__(self, net):
        super().__init__()
        self.model = "beats"
        self.net = net
        cfg = net.cfg
        self.hidden_size = int(cfg.encoder_embed_dim)
        self.n_layers = int(cfg.encoder_layers)
        # one row of patches needs input_patch_size fbank frames
        self.min_samples = _FRAME + (int(cfg.input_patch_size) - 1) * _HOP

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any]) -> "BEATsBackbone":
        return cls(_build_net(cfg))

    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        wav_lens = torch.ones(chunks.shape[0], device=chunks.device)  # SpeechBrain needs wav_lens
        return self.net(chunks, wav_lens)[0]

    def freeze(self, feature_encoder: bool = True, layers: int = 0) -> None:
        """Feature encoder = patch embedding + its layer norm; ``layers`` > 0 also freezes the
        projection, the positional convolution, the encoder's input norm and layers ``0..layers-1``
        (layer 0 owns the relative position bias shared by every layer, which is then frozen too)."""
        self._check_layers(layers)
        net = self.net
        if feature_encoder or layers > 0:
            _set_trainable([net.patch_embedding, net.layer_norm], False)
        if layers > 0:
            below = [net.post_extract_proj, net.encoder.pos_conv]
            if not net.cfg.layer_norm_first:
                below.append(net.encoder.layer_norm)
            _set_trainable(below + list(net.encoder.layers[:layers]), False)

    def config_dict(self) -> dict[str, Any]:
        return {"model": "beats", "normalize": False, "config": dict(self.net.cfg.__dict__)}

    @property
    def is_tiny_random(self) -> bool:
        return bool(getattr(self.net.cfg, TINY_MARK, False))

    def save(self, out: Path) -> Path:
        """Write a checkpoint in the official format ``{"cfg": dict, "model": state_dict}`` (atomic)."""
        out = Path(out)
        state = {"cfg": dict(self.net.cfg.__dict__), "model": self.net.state_dict()}
        with atomic_path(out, suffix=".pt") as tmp:
            torch.save(state, tmp)
        return out


def load_checkpoint(path: Path) -> BEATsBackbone:
    """A BEATs backbone from an official-format checkpoint file, read with ``weights_only=True``."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / pickled-code files
        raise WeightsError(f"{path} is not a readable BEATs checkpoint ({type(exc).__name__}: {exc}); it must be "
                           "a torch.save'd dict of plain tensors with 'cfg' and 'model' like the official "
                           "BEATs_iter3*.pt files (files that need pickled code are refused)") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("cfg"), dict) or not isinstance(ckpt.get("model"), dict):
        found = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise WeightsError(f"{path} is not a BEATs checkpoint: expected a dict with 'cfg' (dict) and 'model' "
                           f"(state dict), found {found}")
    try:
        backbone = BEATsBackbone.from_cfg(ckpt["cfg"])
        backbone.net.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise WeightsError(f"{path}: the weights do not fit the BEATs network its cfg describes ({exc})") from None
    return backbone
