"""The seed's core system: three-subnetworks embedding model + K-Means or GMM backend.

Training (one model over every machine type of a data set, as in the report): classify each
normal training clip into machine type x section x attribute combination (``noAttribute``
machines get one class per section) with the sub-cluster AdaCos loss, mixup at the waveform
level, Adam (lr 1e-3), batch 64, clips tiled/cropped to 12 s.

Data loading reads clips from disk batch by batch (a ``torch.utils.data.DataLoader`` over the
file list), so memory holds a few batches, never the data set: the DCASE-sized set is 7,000
clips x 192,000 samples, 5.4 GB as float32.

Data parallel: under ``torchrun`` (``WORLD_SIZE`` > 1) every process takes its slice of each
global batch (``batch_size`` per process) and gradients are averaged by
``DistributedDataParallel``: NCCL on GPUs, gloo on CPU. Rank 0 writes checkpoints and
scores.

Backends (fitted per machine type and section on the normal training clips' embeddings,
length-normalised): ``kmeans`` (K-Means centres of the source clips + every target clip as its
own centre; score = smallest cosine distance) or ``gmm`` (negative log-likelihood).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from asdcore.data import DEFAULT_SECONDS, SAMPLE_RATE, ClipRecord, Dataset, DataError, load_clip
from asdcore.runs import Run, save_arrays, save_json
from asdcore.scored import SCORED_META, backend_path, embedding_path, read_json, scored_meta, section_key, write_outputs
from asdcore.systems import System, SystemInfo, backend_training_source, decision_threshold, training_clips
from asdcore.training import (
    barrier,
    distributed_env,
    epoch_generator,
    fit,
    init_distributed,
    resolve_device,
    seed_everything,
)


@dataclass
class ThreeSubnetSettings:
    """Every knob of the three-subnet system. Defaults follow the report where it speaks and
    Wilkinghoff's public code (``wilkinghoff/ssl4asd`` ``main_statex+featex.py``,
    ``wilkinghoff/dcase2024_task2`` ``main.py``) where it is silent; each earlier choice of this
    project stays reachable as a setting (and is what a run folder written before the setting
    existed gets, :data:`asdcore.runs.LEGACY_SETTINGS`).

    Report: batch 64, lr 1e-3 (Adam), 12 s clips, mixup, sub-cluster AdaCos, K-Means or GMM.
    Public code: epochs 10; n_subclusters 16 (ssl4asd; 32 in the 2024 system); mixup_prob 0.5;
    kmeans_clusters 16 (32 in 2024). gmm_components 4: a full-covariance mixture of 512-d
    embeddings from ~1000 clips is only identifiable with few components (our choice).

    Items of the public recipe (``bench/ablation.py`` switches them one at a time):

    * ``adacos_rule``: ``"public"`` scale rule with Keras' clipped cross-entropy, or ``"textbook"``
      (:mod:`asdcore.losses`).
    * ``stft_net`` ``"public"`` with ``stft_time_pool`` ``"max"``, or the earlier ``"basic"`` branch
      with ``"mean"`` (:mod:`asdcore.models.three_subnet`); ``stft_mean_norm`` (on, public).
    * ``use_bias`` (off, public) and ``weight_decay``: L2 coefficient on kernels, Keras convention
      (penalty ``weight_decay * sum(w^2)`` added to the loss; public 1e-5).
    * ``class_domains``: every class is machine type x section x attributes x domain (public); off,
      the domain is only added with ``domain_classes`` for machine types without attributes.
      ``train_domains``: ``"both"`` trains on source and target clips; ``"source"`` is the 2024
      public variant (source clips only, sample weights balancing the attribute classes within each
      machine type, target clips used only as scoring centres; :func:`source_sample_weights`).
    * ``mixup_mode``: ``"sample"`` (one coin per clip, mirrored partner, public) or ``"batch"``.
    * ``featex`` (on, public) with ``featex_mode``: ``"add"`` (a head over 3C classes whose loss is
      added to the main loss, public) or ``"replace"`` (the earlier 2C-class loss instead of the main
      loss); ``featex_partner``: ``"batch"`` (public: the mirrored clip in ``"add"`` mode, a random
      shift in ``"replace"`` mode) or ``"machine"`` (a clip of the same machine type).
    * ``kmeans_renorm``: re-normalise the K-Means centres (off: public, see
      :class:`asdcore.backends.KMeansBackend`).
    * ``n_models``: train that many models (seeds ``seed``, ``seed + 1``, ...) into the run and
      score with their distances summed per domain (the 2024 public ensemble).

    Project options, off by default: ``pseudo_classes`` (:func:`pseudo_attributes`),
    ``domain_classes``, ``spectrum_log`` (log-compressed amplitude spectrum).
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    clip_seconds: float = DEFAULT_SECONDS
    n_subclusters: int = 16
    mixup_prob: float = 0.5
    kmeans_clusters: int = 16
    gmm_components: int = 4
    gmm_covariance: str = "full"
    seed: int = 0
    device: str = "auto"
    num_workers: int = 2
    embed_batch_size: int = 16  # CPU: 16 embeds ~30 % faster than 32 or 64 (cache); results do not depend on it
    adacos_rule: str = "public"
    stft_net: str = "public"
    stft_mean_norm: bool = True
    stft_time_pool: str = "max"
    use_bias: bool = False
    weight_decay: float = 1e-5
    class_domains: bool = True
    train_domains: str = "both"
    mixup_mode: str = "sample"
    featex: bool = True
    featex_mode: str = "add"
    featex_partner: str = "batch"
    kmeans_renorm: bool = False
    n_models: int = 1
    domain_classes: bool = False
    pseudo_classes: int = 0
    spectrum_log: bool = False

    def __post_init__(self) -> None:
        from asdcore.losses import SCALE_RULES

        choices = {"featex_partner": ("batch", "machine"), "featex_mode": ("add", "replace"),
                   "mixup_mode": ("sample", "batch"), "train_domains": ("both", "source"),
                   "adacos_rule": SCALE_RULES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {getattr(self, name)!r}")
        if int(self.pseudo_classes) < 0:
            raise ValueError(f"pseudo_classes must be >= 0; got {self.pseudo_classes}")
        if int(self.n_models) < 1:
            raise ValueError(f"n_models must be >= 1; got {self.n_models}")
        if not float(self.weight_decay) >= 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay}")
        self.model_config()  # the model's own checks (e.g. stft_time_pool), before any job starts

    def model_config(self):
        """The :class:`~asdcore.models.three_subnet.ThreeSubnetConfig` these settings build."""
        from asdcore.models.three_subnet import ThreeSubnetConfig

        return ThreeSubnetConfig(clip_seconds=self.clip_seconds, stft_net=str(self.stft_net),
                                 stft_mean_norm=bool(self.stft_mean_norm), stft_time_pool=str(self.stft_time_pool),
                                 spectrum_log=bool(self.spectrum_log), use_bias=bool(self.use_bias))


def class_key(clip: ClipRecord, domain_classes: bool = False, pseudo: dict[str, int] | None = None,
              all_domains: bool = False) -> str:
    """The classification target of a clip: machine, section and attribute combination (and domain).

    ``all_domains``: every clip's domain is part of its class, as in the public code (classes =
    machine type x section x attributes x domain), so a machine type without attributes still has a
    source and a target class.
    ``domain_classes`` (without ``all_domains``): only clips without attribute information
    (``noAttribute``) are split by domain. Every DCASE file name carries the domain, so this is label
    information the first-shot setting still has.
    ``pseudo``: pseudo-attribute of a ``noAttribute`` clip (by path, see :func:`pseudo_attributes`),
    appended as ``/p<k>``.
    """
    key = f"{clip.machine}/{clip.section}/{clip.attribute_string}"
    if all_domains:
        key += f"/{clip.domain}"
    if clip.attribute_string == "noAttribute":
        if domain_classes and not all_domains:
            key += f"/{clip.domain}"
        if pseudo is not None and str(clip.path) in pseudo:
            key += f"/p{pseudo[str(clip.path)]}"
    return key


def source_sample_weights(keys: list[str], machine_sections: list[str]) -> np.ndarray:
    """Sample weights of the 2024 public system for training on source clips only.

    As ``dcase2024_task2/main.py`` computes them: each clip of class ``c`` gets the number of
    training clips of *other* classes, the weights are normalised to sum to 1 within each machine
    type and section, and rescaled to mean 1 over all clips. So every machine type and section
    weighs the same in total whatever its number of clips, and within one a rare attribute class
    weighs a little more per clip than a frequent one (the counts are over the whole data set, so
    on a DCASE-sized set the per-clip weights within a machine type differ by a few percent only).
    """
    keys_a = np.asarray(keys)
    groups = np.asarray(machine_sections)
    w = np.array([float(np.sum(keys_a != k)) for k in keys_a])
    for g in np.unique(groups):
        sel = groups == g
        total = w[sel].sum()
        w[sel] = w[sel] / total if total > 0 else 1.0 / sel.sum()
    return w / w.mean()


def pseudo_attributes(clips: list[ClipRecord], n_clusters: int, seed: int, seconds: float,
                      progress: bool = False) -> dict[str, int]:
    """Pseudo-attribute labels for the source clips of machine types without attributes.

    Why: a machine type without attribute labels is a single class, so the classifier has no
    reason to tell its clips apart and their embeddings collapse to a point (measured on the
    synthetic ``full`` set: cosine distances around 0.005 for slider and ToyTrain, and fault AUCs at
    chance). Their operating conditions still vary (speeds, loads), and they show in the long-term
    spectrum. So the clips of each such machine type and section (source domain; the ~10 target
    clips stay one class) are clustered by K-Means (``n_clusters``, ``random_state=seed``) on
    standardised per-band mean and standard deviation over time of the log-mel spectrogram
    (:func:`asdcore.features.log_mel`, default configuration), and the cluster becomes the class.
    This follows the pseudo-labelling many DCASE 2024 systems used for ``noAttribute`` machines;
    the features are deliberately simple and independent of the model, so the labels are fixed
    before training and an interrupted run resumes with the same classes.

    Returns ``{clip path: cluster id}`` for the clustered clips.
    """
    from sklearn.cluster import KMeans
    from tqdm.auto import tqdm

    from asdcore.features import log_mel

    groups: dict[tuple[str, str], list[ClipRecord]] = {}
    for c in clips:
        if c.attribute_string == "noAttribute" and c.domain == "source":
            groups.setdefault((c.machine, c.section), []).append(c)
    out: dict[str, int] = {}
    for (machine, section), members in sorted(groups.items()):
        k = min(n_clusters, len(members))
        if k < 2:
            continue
        feats = []
        for c in tqdm(members, desc=f"pseudo-attributes {machine}", disable=not progress, leave=False):
            lm = log_mel(load_clip(str(c.path), SAMPLE_RATE, seconds))[0]
            feats.append(torch.cat([lm.mean(dim=-1), lm.std(dim=-1)]).numpy())
        x = np.stack(feats)
        x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)
        ids = KMeans(n_clusters=k, random_state=seed, n_init=10).fit_predict(x)
        out.update({str(c.path): int(i) for c, i in zip(members, ids)})
    return out


class ClipFolder(torch.utils.data.Dataset):
    """Clips read from disk on demand: (wave float32 (N,), index)."""

    def __init__(self, clips: list[ClipRecord], seconds: float):
        self.paths = [str(c.path) for c in clips]
        self.seconds = seconds

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return torch.from_numpy(load_clip(self.paths[i], SAMPLE_RATE, self.seconds)), i


def _loader(clips: list[ClipRecord], seconds: float, batches: list[list[int]], workers: int):
    return torch.utils.data.DataLoader(ClipFolder(clips, seconds), batch_sampler=batches, num_workers=workers,
                                       persistent_workers=False)


class _Classifier(torch.nn.Module):
    """Model + loss heads in one module, so DDP also broadcasts the AdaCos scale buffers.

    ``forward(waves, labels, weights, exchange)``:

    * ``featex_head`` is None: the classification loss of the concatenated embedding, or, with
      ``exchange=(partner, branch)``, the earlier FeatEx loss *instead* of it (``featex_mode
      "replace"``, :func:`featex_batch`; the head then has ``2 C`` classes).
    * ``featex_head`` set (``featex_mode "add"``): the classification loss plus, with weight 1, the
      public FeatEx loss on the same forward pass (:func:`featex_public`, ``3 C`` classes), as the
      public systems compile their two outputs with ``loss_weights=[1, 1]``.

    ``weights``: per-clip sample weights (source-only training), applied to both losses as Keras
    applies ``sample_weight`` to every output.
    """

    def __init__(self, model: torch.nn.Module, head: torch.nn.Module, featex_head: torch.nn.Module | None = None):
        super().__init__()
        self.model = model
        self.head = head
        self.featex_head = featex_head

    def forward(self, waves: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None,
                exchange: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if exchange is None:
            return self.head(self.model(waves), labels, weights)
        parts = list(self.model.branch_embeddings(waves).values())
        if self.featex_head is None:
            emb, y = featex_batch(parts, labels, exchange[0], exchange[1])
            return self.head(emb, y, None if weights is None else weights.repeat(2))
        main = self.head(torch.cat(parts, 1), labels, weights)
        return main + self.featex_head(*featex_public(parts, labels, *exchange), weights)


def featex_public(parts: list[torch.Tensor], labels: torch.Tensor, partner: torch.Tensor, branch: torch.Tensor,
                  keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature exchange as the public ``AugLayer`` does it: ``(embeddings (B, D), labels (B, 3C))``.

    Clip ``i`` is kept (``keep[i]``, probability 0.5) with label ``[y_i, 0, 0]``, or exchanged: the
    output of one sub-network (``branch[i]``) comes from clip ``partner[i]`` and the label is
    ``[0, y_i / 2, y_partner / 2]``. Telling kept from exchanged embeddings needs the sub-networks
    to agree on *which clip* they see, which makes the embedding carry clip-level detail where the
    class labels are coarse. The public system has two sub-networks and exchanges one of them; with
    three, one chosen uniformly per clip is exchanged (our reading).
    """
    partner = partner.to(labels.device)
    keep = keep.to(labels.device).unsqueeze(1)
    branch = branch.to(labels.device).unsqueeze(1)
    swapped = [torch.where(keep | (branch != k), p, p[partner]) for k, p in enumerate(parts)]
    zeros = torch.zeros_like(labels)
    kept = torch.cat([labels, zeros, zeros], 1)
    exchanged = torch.cat([zeros, 0.5 * labels, 0.5 * labels[partner]], 1)
    return torch.cat(swapped, 1), torch.where(keep, kept, exchanged)


def featex_public_draw(batch_size: int, n_branches: int, gen: torch.Generator, prob: float = 0.5,
                       groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Randomness of :func:`featex_public` for one batch: ``(partner, branch, keep)``, each ``(B,)``.

    ``partner``: the mirrored clip ``B - 1 - i`` (public), or with ``groups`` a clip of the same
    group (:func:`featex_draw`). A clip that is its own partner (the middle of an odd batch) is kept.
    """
    if groups is None:
        partner = torch.arange(batch_size - 1, -1, -1)
        branch = torch.randint(0, n_branches, (batch_size,), generator=gen)
    else:
        partner, branch = featex_draw(batch_size, n_branches, gen, groups)
    keep = (torch.rand(batch_size, generator=gen) < prob) | (partner == torch.arange(batch_size))
    return partner, branch, keep


def featex_draw(batch_size: int, n_branches: int, gen: torch.Generator,
                groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """FeatEx randomness for one batch: ``(partner (B,), branch (B,))``.

    ``partner`` is a cyclic shift of the batch by 1..B-1, so no clip is its own partner (an
    "exchanged" sample that exchanged nothing would carry a wrong label). With ``groups`` (one id
    per sample, e.g. the machine type) each sample's partner is drawn uniformly from the *other*
    samples of its group (the shift partner where it is alone in its group): exchanging features
    between two clips of the same machine type cannot be detected from the machine type alone,
    so the sub-networks must agree on the clip itself.
    """
    shift = int(torch.randint(1, batch_size, (1,), generator=gen)) if batch_size > 1 else 0
    partner = (torch.arange(batch_size) + shift) % batch_size
    draws = torch.rand(batch_size, generator=gen)
    if groups is not None:
        for i in range(batch_size):
            same = torch.nonzero((groups == groups[i]) & (torch.arange(batch_size) != i)).flatten()
            if same.numel():
                partner[i] = same[min(int(draws[i] * same.numel()), same.numel() - 1)]
    return partner, torch.randint(0, n_branches, (batch_size,), generator=gen)


def featex_batch(parts: list[torch.Tensor], labels: torch.Tensor, partner: torch.Tensor,
                 branch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This project's earlier FeatEx (``featex_mode "replace"``), which replaces the main loss.

    Departure from the public code (kept for old runs and the ablation): the public ``AugLayer``
    keeps the main loss and adds a 3C-class loss (:func:`featex_public`).

    Returns ``(embeddings (2B, D), labels (2B, 2C))``: the B original embeddings with labels ``[y, 0]``, then B exchanged ones with labels ``[0, (y_i + y_partner) / 2]``. Exchanged sample
    ``i`` is sample ``i``'s embedding with the output of one sub-network (``branch[i]``) taken from
    sample ``partner[i]``. To tell the two halves apart the sub-networks have to agree on *which
    clip* they look at, not only on its class: a self-supervised task that makes the embedding
    carry clip-level detail even where the class labels are coarse (machine types without
    attributes). Choices for three sub-networks (the public form has two): one sub-network is
    exchanged per sample, chosen uniformly; labels mix the two clips' labels half and half.
    """
    partner = partner.to(labels.device)
    branch = branch.to(labels.device)
    swapped = [torch.where((branch == k).unsqueeze(1), p[partner], p) for k, p in enumerate(parts)]
    zeros = torch.zeros_like(labels)
    y = torch.cat([torch.cat([labels, zeros], 1), torch.cat([zeros, 0.5 * (labels + labels[partner])], 1)])
    return torch.cat([torch.cat(parts, 1), torch.cat(swapped, 1)]), y


def model_file(index: int) -> str:
    """Weights and checkpoint name of model ``index`` of a run: ``three_subnet``, ``three_subnet_1``, ..."""
    return "three_subnet" if index == 0 else f"three_subnet_{index}"


class ModelStack(torch.nn.Module):
    """Several trained models as one frontend: the embedding is their embeddings side by side.

    Scoring splits it again into one block per model (:class:`asdcore.backends.KMeansBackend`
    ``n_blocks``), so an ``n_models`` run is scored, saved and inspected like any other.
    """

    def __init__(self, models: list[torch.nn.Module]):
        super().__init__()
        self.models = torch.nn.ModuleList(models)

    @property
    def embed_dim(self) -> int:
        return sum(m.embed_dim for m in self.models)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(waves) for m in self.models], dim=1)


@dataclass
class TrainingData:
    """What one training run learns from: clips, their class ids, machine ids and sample weights."""

    clips: list[ClipRecord]
    classes: list[str]
    labels: torch.Tensor
    machine_ids: torch.Tensor
    weights: torch.Tensor | None = None


class ThreeSubnetSystem(System):
    Settings = ThreeSubnetSettings
    supports_distributed = True

    def __init__(self, info: SystemInfo):
        self.info = info
        self.backend = info.backend

    # ------------------------------------------------------------------ model
    def _model(self, s: ThreeSubnetSettings):
        from asdcore.models.three_subnet import ThreeSubnet

        return ThreeSubnet(s.model_config())

    def load_model(self, run: Run, device: torch.device | None = None):
        """The run's trained model; with ``n_models > 1`` a :class:`ModelStack` of all of them."""
        s = self.run_settings(run)
        device = device or resolve_device(s.device)
        models = []
        for i in range(s.n_models):
            model = self._model(s)
            run.load_into(model, model_file(i))
            models.append(model)
        model = models[0] if len(models) == 1 else ModelStack(models)
        return model.to(device).eval()

    # ------------------------------------------------------------------ training
    def _training_data(self, run: Run, ds: Dataset, s: ThreeSubnetSettings, progress: bool) -> TrainingData:
        """Clips, class labels, machine ids and sample weights of a training run."""
        clips = [c for m in run.config.machines for c in training_clips(ds, m)]
        if s.train_domains == "source":
            clips = [c for c in clips if c.domain == "source"]
        if not clips:
            raise DataError(f"no normal training clips for {', '.join(run.config.machines)} in {ds.root}")
        pseudo = (pseudo_attributes(clips, s.pseudo_classes, s.seed, s.clip_seconds, progress)
                  if s.pseudo_classes else None)
        keys = [class_key(c, s.domain_classes, pseudo, all_domains=s.class_domains) for c in clips]
        classes = sorted(set(keys))
        index = {k: i for i, k in enumerate(classes)}
        weights = None
        if s.train_domains == "source":
            weights = torch.tensor(source_sample_weights(keys, [f"{c.machine}/{c.section}" for c in clips]),
                                   dtype=torch.float32)
        return TrainingData(clips=clips, classes=classes, labels=torch.tensor([index[k] for k in keys]),
                            machine_ids=torch.tensor([run.config.machines.index(c.machine) for c in clips]),
                            weights=weights)

    def train(self, run: Run, ds: Dataset, resume: bool = False, progress: bool = True,
              on_epoch_end: Callable[[int, float], None] | None = None) -> None:
        s = self.run_settings(run)
        rank, world = distributed_env()
        distributed = world > 1
        device = init_distributed(s.device) if distributed else resolve_device(s.device)
        data = self._training_data(run, ds, s, progress and rank == 0)
        if rank == 0:
            save_json(run.path / "classes.json", data.classes)
            run.set_status("training")
        t0 = time.perf_counter()
        guard_hits, cap_hits = 0, 0
        for i in range(s.n_models):
            guards, caps = self._train_one(run, data, s, i, device, rank, world, resume, progress, on_epoch_end)
            guard_hits, cap_hits = guard_hits + guards, cap_hits + caps
        if rank == 0:
            run.set_status("trained", train_seconds=round(time.perf_counter() - t0, 2),
                           nan_guard_hits=guard_hits, scale_cap_hits=cap_hits, world_size=world)
        if distributed:
            import torch.distributed as dist

            barrier()
            dist.destroy_process_group()
        if rank == 0:
            self.score(run, ds, run.path, progress=progress)
            run.set_status("scored")

    def _train_one(self, run: Run, data: TrainingData, s: ThreeSubnetSettings, index: int, device: torch.device,
                   rank: int, world: int, resume: bool, progress: bool,
                   on_epoch_end: Callable[[int, float], None] | None) -> tuple[int, int]:
        """Train model ``index`` of the run (seed ``s.seed + index``); returns its (NaN-guard, scale-cap) hits.

        Each model has its own checkpoint, so an interrupted ``n_models`` run resumes inside the
        model it was training; a finished model's checkpoint says so and costs nothing on resume.
        """
        from asdcore.losses import SubClusterAdaCos, mixup, mixup_per_sample
        from asdcore.models.three_subnet import kernel_parameters

        seed = s.seed + index
        seed_everything(seed)
        model = self._model(s)
        n_classes = len(data.classes)
        replace = s.featex and s.featex_mode == "replace"
        head = SubClusterAdaCos(2 * n_classes if replace else n_classes, n_subclusters=s.n_subclusters,
                                embed_dim=512, seed=seed, rule=s.adacos_rule)
        featex_head = (SubClusterAdaCos(3 * n_classes, n_subclusters=s.n_subclusters, embed_dim=512, seed=seed + 1,
                                        rule=s.adacos_rule) if s.featex and not replace else None)
        net = _Classifier(model, head, featex_head).to(device)
        train_net: torch.nn.Module = net
        if world > 1:
            train_net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None)
        if s.weight_decay > 0:
            # Keras' l2(wd) adds wd * sum(w^2) to the loss: gradient 2 * wd * w, Adam's coupled L2 of 2 * wd
            kernels, others = kernel_parameters(net)
            opt = torch.optim.Adam([{"params": kernels, "weight_decay": 2 * s.weight_decay},
                                    {"params": others, "weight_decay": 0.0}], lr=s.lr)
        else:
            opt = torch.optim.Adam(net.parameters(), lr=s.lr)
        per_rank = s.batch_size
        global_batch = per_rank * world
        clips, labels = data.clips, data.labels

        def batches(epoch: int, gen: torch.Generator):
            order = torch.randperm(len(clips), generator=gen).tolist()
            # every rank walks the same global batches and takes its own slice of each
            n_full = len(order) // global_batch if len(order) >= global_batch else 1
            plan = [order[b * global_batch:(b + 1) * global_batch][rank * per_rank:(rank + 1) * per_rank]
                    for b in range(n_full)]
            plan = [p for p in plan if len(p) > 1]
            mix_gen = epoch_generator(seed + 7919 * (rank + 1), epoch)
            for waves, idx in _loader(clips, s.clip_seconds, plan, s.num_workers):
                onehot = torch.nn.functional.one_hot(labels[idx], n_classes).float()
                if s.mixup_mode == "sample":
                    waves, targets = mixup_per_sample(waves, onehot, mix_gen, prob=s.mixup_prob)
                else:
                    waves, targets = mixup(waves, onehot, mix_gen, prob=s.mixup_prob)
                groups = data.machine_ids[idx] if s.featex_partner == "machine" else None
                exchange = None
                if replace:
                    exchange = featex_draw(len(idx), 3, mix_gen, groups)
                elif s.featex:
                    exchange = featex_public_draw(len(idx), 3, mix_gen, groups=groups)
                weights = data.weights[idx].to(device) if data.weights is not None else None
                loss = train_net(waves.to(device, non_blocking=True), targets.to(device), weights, exchange)
                yield len(idx) * world, loss

        name = model_file(index)
        scales: list[float] = list(run.config.extra.get("adacos_scale", {}).get(name, []))

        def epoch_done(epoch: int, loss: float) -> None:
            if rank == 0:   # the scale each epoch ends with, kept per model in config.json
                del scales[epoch - 1:]
                scales.append(round(float(head.scale), 6))
                run.set_status("training", adacos_scale={**run.config.extra.get("adacos_scale", {}), name: scales})
            if on_epoch_end is not None:
                on_epoch_end(epoch, loss)

        desc = "three-subnet" if s.n_models == 1 else f"three-subnet {index + 1}/{s.n_models}"
        fit(net, opt, batches, s.epochs, seed, run.checkpoint_dir / f"{name}.pt", resume=resume, desc=desc,
            progress=progress and rank == 0, on_epoch_end=epoch_done, save=rank == 0,
            status=lambda: {"s": f"{float(head.scale):.3g}"})
        if rank == 0:
            run.save_weights(name, model.state_dict())
        heads = [h for h in (head, featex_head) if h is not None]
        return sum(h.nan_guard_hits for h in heads), sum(h.scale_cap_hits for h in heads)

    # ------------------------------------------------------------------ embeddings
    def _forward_batch(self, model, batch: torch.Tensor, s) -> torch.Tensor:
        """One batch of fixed-length waves through the frontend (subclasses pass their own options)."""
        return model(batch)

    def _embedding_dim(self, model) -> int:
        return int(getattr(model, "embed_dim", 512))

    @torch.no_grad()
    def embed_waves(self, model, waves: list[np.ndarray] | np.ndarray, s, device: torch.device) -> np.ndarray:
        """Embeddings of raw 16 kHz waves, tiled/cropped to ``clip_seconds`` as in training."""
        from asdcore.data import fix_length

        n = int(round(s.clip_seconds * SAMPLE_RATE))
        out = []
        for i in range(0, len(waves), s.embed_batch_size):
            chunk = np.stack([fix_length(np.asarray(w, dtype=np.float32), n) for w in waves[i:i + s.embed_batch_size]])
            out.append(self._forward_batch(model, torch.from_numpy(chunk).to(device), s).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self._embedding_dim(model)), np.float32)

    @torch.no_grad()
    def embed_clips(self, model, clips: list[ClipRecord], s, device: torch.device, progress: bool,
                    desc: str) -> np.ndarray:
        """Embeddings of clips read from disk batch by batch (the data set is never held in memory)."""
        from tqdm.auto import tqdm

        b = s.embed_batch_size
        plan = [list(range(i, min(i + b, len(clips)))) for i in range(0, len(clips), b)]
        out = []
        for waves, _ in tqdm(_loader(clips, s.clip_seconds, plan, s.num_workers), total=len(plan), desc=desc,
                             disable=not progress, unit="batch", leave=False):
            out.append(self._forward_batch(model, waves.to(device), s).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self._embedding_dim(model)), np.float32)

    # ------------------------------------------------------------------ scoring
    #: Constructor parameters of each backend this system offers, from its settings. SSL systems have
    #: neither ``kmeans_renorm`` nor ``n_models``: they keep the earlier re-normalised centres, one model.
    BACKEND_PARAMS: dict[str, Callable[[ThreeSubnetSettings], dict]] = {
        "kmeans": lambda s: dict(n_clusters=s.kmeans_clusters, seed=s.seed, renorm=getattr(s, "kmeans_renorm", True),
                                 n_blocks=getattr(s, "n_models", 1)),
        "gmm": lambda s: dict(n_components=s.gmm_components, covariance_type=s.gmm_covariance, seed=s.seed),
    }

    def _backend(self, s: ThreeSubnetSettings):
        """A new backend of this system's kind (from :data:`asdcore.backends.BACKENDS`) set from ``s``."""
        from asdcore.backends import make_backend

        return make_backend(self.backend, **self.BACKEND_PARAMS[self.backend](s))

    def score_waves(self, run: Run, machine: str, section: str, waves, scored_dir: Path | None = None) -> np.ndarray:
        """Anomaly scores of raw 16 kHz clips with the backend fitted when ``scored_dir`` was scored."""
        s = self.run_settings(run)
        device = resolve_device(s.device)
        backend = self.fitted_backend(scored_dir or run.path, machine, section)
        return np.asarray(backend.score(self.embed_waves(self.load_model(run, device), list(waves), s, device)))

    def reusable_embeddings(self, run: Run, ds: Dataset, folder: Path | None) -> Path | None:
        """``folder`` when its saved embeddings can be reused (it scored the same data with the same weights), else None.

        Both backends read the same embeddings; scoring a second backend (the app's first start
        scores K-Means and GMM) then costs a backend fit instead of a second pass of the network.
        """
        if folder is None:
            return None
        meta = read_json(Path(folder) / SCORED_META)
        try:
            scored_at = (Path(folder) / SCORED_META).stat().st_mtime
            stale = any(w.stat().st_mtime > scored_at for w in Path(run.model_dir).iterdir())
        except OSError:
            return None
        if meta is None or stale or meta.get("run") != str(Path(run.path).resolve()) or meta.get("data_root") != str(Path(ds.root).resolve()):
            return None
        return Path(folder)

    def _embed_or_reuse(self, model, clips: list[ClipRecord], s, device: torch.device, progress: bool,
                        reuse: Path | None, machine: str, section: str, split: str) -> np.ndarray:
        if reuse is not None:
            from asdcore.runs import load_arrays

            try:
                saved = load_arrays(embedding_path(reuse, machine, section, split))
            except (OSError, ValueError, KeyError):
                saved = None
            if saved is not None and list(saved["names"]) == [c.file_name for c in clips]:
                return saved["embeddings"].astype(np.float32)
        return self.embed_clips(model, clips, s, device, progress, f"{machine} {section}: {split}")

    def score(self, run: Run, ds: Dataset, out_dir: Path, progress: bool = True,
              reuse_embeddings_from: Path | None = None) -> pd.DataFrame:
        """Score ``ds``; ``reuse_embeddings_from``: a folder this run scored ``ds`` into (any backend)."""
        s = self.run_settings(run)
        device = resolve_device(s.device)
        model = self.load_model(run, device)
        reuse = self.reusable_embeddings(run, ds, reuse_embeddings_from)
        rows, embeddings, thresholds = [], {}, {}
        test_machines = sorted({c.machine for c in ds.select(split="test")}, key=str.lower)
        if not test_machines:
            raise DataError(f"{ds.root} has no test clips to score")
        for machine in test_machines:
            for section in sorted({c.section for c in ds.select(machine=machine, split="test")}):
                train = backend_training_source(run, ds, machine, section)
                test = ds.select(machine=machine, section=section, split="test")
                train_emb = self._embed_or_reuse(model, train, s, device, progress, reuse, machine, section, "train")
                test_emb = self._embed_or_reuse(model, test, s, device, progress, reuse, machine, section, "test")
                is_target = np.array([c.domain == "target" for c in train])
                backend = self._backend(s).fit(train_emb[~is_target], train_emb[is_target])
                save_arrays(backend_path(out_dir, self.backend, machine, section), **backend.state_dict())
                train_scores = np.asarray(backend.score(train_emb), dtype=np.float64)
                test_scores = np.asarray(backend.score(test_emb), dtype=np.float64)
                thresholds[section_key(machine, section)] = decision_threshold(train_scores)
                for split, clips, emb, sc in (("train", train, train_emb, train_scores), ("test", test, test_emb, test_scores)):
                    for c, v in zip(clips, sc):
                        rows.append({"machine": machine, "section": section, "split": split, "domain": c.domain,
                                     "label": c.label, "file_name": c.file_name, "score": float(v)})
                    embeddings[(machine, section, split)] = ([c.file_name for c in clips], emb)
        clip_scores = pd.DataFrame(rows)
        write_outputs(Path(out_dir), clip_scores, embeddings, thresholds, scored_meta(self.info.name, run, ds))
        return clip_scores
