"""Pre-trained SSL frontends (HuBERT, Wav2Vec 2.0, WavLM, UniSpeech-SAT, BEATs) as systems.

Systems ``<model>-kmeans`` and ``<model>-gmm`` for each model of
:data:`asdcore.models.ssl.SSL_MODELS`. They behave exactly like the three-subnetworks system
(:mod:`asdcore.systems.three_subnet`; both use the frontend and folder scoring of
:mod:`asdcore.systems.embedding` and the classes of :mod:`asdcore.systems.classifier`, by
composition): one model over every machine type of the data set, trained to classify machine
type x section x attribute combination with the sub-cluster AdaCos loss and waveform mixup,
checkpointed every epoch by :func:`asdcore.training.fit` (exact resume), then K-Means or GMM
backends per machine type and section on the normal training clips' embeddings, and the same
scored-folder outputs.

What differs:

* The frontend is a pre-trained backbone read from local files (``weights`` setting; see
  :func:`asdcore.models.ssl.resolve_weights`), its frame features pooled over the clip
  (``pooling``) and, when fine-tuned, projected linearly to ``embed_dim`` dimensions.
* Two learning rates (Adam parameter groups): ``lr`` for the new layers (projection) and the much
  lower ``backbone_lr`` for the pre-trained weights, which a large step would wash out.
  ``freeze_feature_encoder`` (default on, the usual wav2vec2-style recipe: the convolutional
  encoder is generic and the most memory-hungry part to back-propagate through) and
  ``freeze_layers`` (the first N transformer layers) stop gradients into the bottom of the
  network.
* ``frozen``: no fine-tuning at all; the embedding is the pooled backbone features, and
  ``train`` only embeds and scores (the quick CPU mode).
* Exact resume with dropout, layer drop and time masking (which draw from the global torch and
  numpy generators): the global generators are re-seeded from ``(seed, epoch)`` at the start of
  every epoch, so a resumed epoch draws what the uninterrupted one drew.
* The run folder holds the whole embedder (backbone + projection) as ``model/ssl.safetensors``
  and its architecture as ``model/backbone.json``, so scoring never needs the original weights
  again (a base model makes a run folder of ~0.4 GB).
* Single process only (no torchrun); on a GPU the backbone runs under autocast (``amp``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from asdcore.data import DEFAULT_SECONDS, Dataset, DataError, check_clips
from asdcore.runs import Run, RunError, save_json
from asdcore.systems import System, SystemInfo, backend_training_source, training_clips
from asdcore.systems.classifier import Classifier, class_key
from asdcore.systems.embedding import EmbeddingFrontend, EmbeddingScoring, clip_loader, clips_to_check
from asdcore.training import epoch_generator, fit, resolve_device, seed_everything

BACKBONE_FILE = "backbone.json"
WEIGHTS_NAME = "ssl"


@dataclass
class SSLSettings:
    """Every knob of an SSL system.

    weights: where the pre-trained weights are: empty = the default location of the model
    (``$ASD_WEIGHTS_DIR/<model>``, then the model's hub id in the local Hugging Face cache), a
    folder in the Hugging Face format, a BEATs ``.pt`` file, or a hub id in the local cache.
    frozen: embeddings only, no fine-tuning. epochs 10, batch 16: fine-tuning a 95 M-parameter
    backbone needs far fewer passes than training the three-subnet model from scratch, and 16
    clips of 12 s fit a GPU with room to spare. lr 1e-3 for the projection (as the three-subnet
    model), backbone_lr 3e-5, within the 1e-5..5e-5 range used to fine-tune these backbones.
    embed_dim 256: the projected embedding the AdaCos head and the backends see (0 = the pooled
    features themselves). clip_seconds 12 (the report's length; clips are tiled/cropped to it as
    for the three-subnet model, so training and scoring see the same input), chunk_seconds 12:
    the longest window one forward sees (longer clips are cut into chunks, see
    :mod:`asdcore.models.ssl`). The backend, mixup and domain_classes settings are the three-subnet
    system's.
    """

    weights: str = ""
    frozen: bool = False
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    backbone_lr: float = 3e-5
    freeze_feature_encoder: bool = True
    freeze_layers: int = 0
    embed_dim: int = 256
    pooling: str = "mean"
    clip_seconds: float = DEFAULT_SECONDS
    chunk_seconds: float = DEFAULT_SECONDS
    n_subclusters: int = 16
    mixup_prob: float = 0.5
    kmeans_clusters: int = 16
    gmm_components: int = 4
    gmm_covariance: str = "full"
    amp: bool = True
    seed: int = 0
    device: str = "auto"
    num_workers: int = 2
    embed_batch_size: int = 8
    domain_classes: bool = False

    def __post_init__(self) -> None:
        from asdcore.models.ssl import POOLINGS

        self.weights = "" if self.weights in (None, "") else str(self.weights)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}; got {self.pooling!r}")
        for name in ("clip_seconds", "chunk_seconds"):
            if not float(getattr(self, name)) >= 0.5:
                raise ValueError(f"{name} must be at least 0.5 s; got {getattr(self, name)}")
        for name in ("lr", "backbone_lr"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}")
        for name in ("epochs", "freeze_layers", "embed_dim"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        for name in ("batch_size", "embed_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")


class SSLSystem(System):
    """One pre-trained SSL frontend (the model is the registry's frontend name) + K-Means/GMM."""

    Settings = SSLSettings
    supports_distributed = False

    def __init__(self, info: SystemInfo):
        from asdcore.models.ssl import spec

        self.info = info
        self.backend = info.backend
        self.scoring = EmbeddingScoring(info.name, info.backend, backend_training_source)
        self.model_name = spec(info.frontend).name

    # ------------------------------------------------------------------ model
    def _embedder(self, backbone, s: SSLSettings):
        from asdcore.models.ssl import SSLEmbedder

        return SSLEmbedder(backbone, embed_dim=0 if s.frozen else s.embed_dim, pooling=s.pooling,
                           chunk_seconds=s.chunk_seconds, amp=s.amp)

    def load_model(self, run: Run, device: torch.device | None = None):
        """The run's embedder (architecture from ``model/backbone.json``, weights from the run)."""
        from asdcore.models.ssl import WeightsError, rebuild_backbone

        s = self.run_settings(run)
        device = device or resolve_device(s.device)
        path = run.model_dir / BACKBONE_FILE
        if not path.exists():
            raise RunError(f"{run.path} has no {BACKBONE_FILE}; was training finished?")
        try:
            saved = json.loads(path.read_text())
            backbone = rebuild_backbone(saved)
        except (ValueError, WeightsError) as exc:
            raise RunError(f"{path} is unreadable: {exc}") from None
        model = self._embedder(backbone, s)
        try:
            run.load_into(model, WEIGHTS_NAME)
        except RuntimeError as exc:
            raise RunError(f"{run.path}: weights do not fit the recorded architecture ({exc})") from None
        return model.to(device).eval()

    # ------------------------------------------------------------------ training
    def train(self, run: Run, ds: Dataset, resume: bool = False, progress: bool = True,
              on_epoch_end: Callable[[int, float], None] | None = None) -> None:
        from asdcore.losses import SubClusterAdaCos, mixup
        from asdcore.models.ssl import describe_backbone, load_backbone

        s = self.run_settings(run)
        device = resolve_device(s.device)
        clips = [c for m in run.config.machines for c in training_clips(ds, m)]
        if not clips:
            raise DataError(f"no normal training clips for {', '.join(run.config.machines)} in {ds.root}")
        # every clip training and scoring will read, before the backbone loads or anything is written
        check_clips(clips_to_check(run, ds, clips, backend_training_source), progress=progress)
        seed_everything(s.seed)
        backbone, source = load_backbone(self.model_name, s.weights or None)
        model = self._embedder(backbone, s)
        save_json(run.model_dir / BACKBONE_FILE, {**backbone.config_dict(), "weights": source.describe()})
        run.set_status("training", weights=source.describe(), backbone=describe_backbone(backbone),
                       tiny_random_weights=backbone.is_tiny_random)
        if progress:
            print(f"{self.info.name}: {source.describe()}; {describe_backbone(backbone)}")
        t0 = time.perf_counter()
        head = None
        if not s.frozen:
            classes = sorted({class_key(c, s.domain_classes) for c in clips})
            labels = torch.tensor([classes.index(class_key(c, s.domain_classes)) for c in clips])
            save_json(run.path / "classes.json", classes)
            backbone.freeze(feature_encoder=s.freeze_feature_encoder, layers=s.freeze_layers)
            # the SSL systems keep this project's earlier AdaCos rule: the public rule (issue 13) was
            # measured on the three-subnet model only
            head = SubClusterAdaCos(len(classes), n_subclusters=s.n_subclusters, embed_dim=model.embed_dim, seed=s.seed,
                                    rule="textbook")
            net = Classifier(model, head).to(device)
            opt = torch.optim.Adam(self.param_groups(model, head, s))
            n_classes = len(classes)

            def batches(epoch: int, gen: torch.Generator):
                # dropout, layer drop and time masking draw from the global generators: re-seed them
                # per epoch so that a resumed epoch repeats the uninterrupted one exactly
                seed_everything(s.seed * 100_003 + 7_919 + epoch)
                order = torch.randperm(len(clips), generator=gen).tolist()
                plan = [order[i:i + s.batch_size] for i in range(0, len(order), s.batch_size)]
                plan = [p for p in plan if len(p) > 1]  # a lone clip has no mixup partner
                mix_gen = epoch_generator(s.seed + 7919, epoch)
                for waves, idx in clip_loader(clips, s.clip_seconds, plan, s.num_workers):
                    onehot = torch.nn.functional.one_hot(labels[idx], n_classes).float()
                    waves, targets = mixup(waves, onehot, mix_gen, prob=s.mixup_prob)
                    yield len(idx), net(waves.to(device, non_blocking=True), targets.to(device))

            fit(net, opt, batches, s.epochs, s.seed, run.checkpoint_dir / f"{WEIGHTS_NAME}.pt", resume=resume,
                desc=self.info.name, progress=progress, on_epoch_end=on_epoch_end)
        # clone: BEATs shares one relative-position module between layers, safetensors refuses shared memory
        run.save_weights(WEIGHTS_NAME, {k: v.detach().clone() for k, v in model.state_dict().items()})
        run.set_status("trained", train_seconds=round(time.perf_counter() - t0, 2),
                       nan_guard_hits=int(getattr(head, "nan_guard_hits", 0)))
        self.score_into(run, ds, run.path, progress=progress)
        run.set_status("scored")

    @staticmethod
    def param_groups(model, head: torch.nn.Module, s: SSLSettings) -> list[dict]:
        """Adam groups: new layers (projection, trainable head parts) at ``lr``, the backbone at ``backbone_lr``."""
        backbone = [p for p in model.backbone.parameters() if p.requires_grad]
        new = [p for p in list(model.proj.parameters() if model.proj is not None else []) + list(head.parameters())
               if p.requires_grad]
        groups = [{"params": new, "lr": s.lr}] if new else []
        if backbone:
            groups.append({"params": backbone, "lr": s.backbone_lr})
        if not groups:
            raise ValueError("nothing to fine-tune: every parameter is frozen and embed_dim is 0; "
                             "use frozen=true for embeddings only")
        return groups

    # ------------------------------------------------------------------ frontend and scoring
    def frontend(self, run: Run, device: str | None = None, optimize: bool = False) -> EmbeddingFrontend:
        """The run's embedder as an :class:`~asdcore.systems.embedding.EmbeddingFrontend` (never traced:
        the transformers run eager); at most ``embed_batch_size`` windows per forward, whatever the
        clip length (bounded memory)."""
        s = self.run_settings(run)
        return EmbeddingFrontend(lambda dev: self.load_model(run, dev), s, resolve_device(device or s.device),
                                 forward=lambda model, batch: model(batch, max_chunks=s.embed_batch_size))

    def score(self, run: Run, ds: Dataset, out_dir: Path, progress: bool = True,
              reuse_embeddings_from: Path | None = None) -> pd.DataFrame:
        """Score ``ds`` as the three-subnetworks system does (:class:`~asdcore.systems.embedding.EmbeddingScoring`)."""
        return self.scoring.score(self.frontend(run), run, ds, out_dir, progress, reuse_embeddings_from)
