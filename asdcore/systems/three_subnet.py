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
from asdcore.runs import Run, RunError, save_arrays, save_json
from asdcore.systems import System, SystemInfo, backend_training_source, decision_threshold, training_clips, scored_meta, write_outputs
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
    """Every knob of the three-subnet system; defaults follow the report where it speaks.

    epochs: the report does not say; 20 is enough for the loss to flatten on the synthetic
    DCASE-sized set (see bench/quality.py). n_subclusters 16 and mixup probability 0.5 follow
    Wilkinghoff's public systems. kmeans_clusters 16 (32 is the other usual value).
    gmm_components: a full-covariance mixture of 512-d embeddings from ~1000 clips is only
    identifiable with few components, hence 4 by default.
    First-shot options, all off by default so that the system is the report's (classes = machine
    type x section x attributes, machine type alone without attributes): domain_classes splits a
    ``noAttribute`` machine type into a source and a target class (:func:`class_key`);
    pseudo_classes > 0 splits its source clips further into that many pseudo-attribute clusters
    (:func:`pseudo_attributes`); featex adds Wilkinghoff's feature-exchange task
    (:func:`featex_batch`), with partners from the whole batch (featex_partner "batch", as
    published) or from the same machine type ("machine"). They address the weakness measured on
    the synthetic ``full`` set, where the clips of a machine type without attributes collapse to one
    point in embedding space; README.md ("Full-size results") gives their measured effect.
    Input options of the model (:class:`asdcore.models.three_subnet.ThreeSubnetConfig`), defaults as
    published: stft_mean_norm (temporal mean subtraction of the log STFT), stft_time_pool ("mean" or
    "max" over time before the STFT branch's flatten), spectrum_log (log-compressed amplitude spectrum).
    """

    epochs: int = 20
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
    domain_classes: bool = False
    featex: bool = False
    featex_partner: str = "batch"
    pseudo_classes: int = 0
    stft_mean_norm: bool = True
    stft_time_pool: str = "mean"
    spectrum_log: bool = False

    def __post_init__(self) -> None:
        if self.featex_partner not in ("batch", "machine"):
            raise ValueError(f"featex_partner must be 'batch' or 'machine'; got {self.featex_partner!r}")
        if int(self.pseudo_classes) < 0:
            raise ValueError(f"pseudo_classes must be >= 0; got {self.pseudo_classes}")
        self.model_config()  # the model's own checks (e.g. stft_time_pool), before any job starts

    def model_config(self):
        """The :class:`~asdcore.models.three_subnet.ThreeSubnetConfig` these settings build."""
        from asdcore.models.three_subnet import ThreeSubnetConfig

        return ThreeSubnetConfig(clip_seconds=self.clip_seconds, stft_mean_norm=bool(self.stft_mean_norm),
                                 stft_time_pool=str(self.stft_time_pool), spectrum_log=bool(self.spectrum_log))


def class_key(clip: ClipRecord, domain_classes: bool = False, pseudo: dict[str, int] | None = None) -> str:
    """The classification target of a clip: machine, section and attribute combination.

    ``domain_classes``: clips without attribute information (``noAttribute``) are split by their
    domain as well (``.../noAttribute/source`` and ``.../target``). Every DCASE file name carries
    the domain, so this is label information the first-shot setting still has; without it a
    machine type without attributes is one class and the classifier learns nothing *within* that
    machine type (only how to tell it from the other machine types).
    ``pseudo``: pseudo-attribute of a ``noAttribute`` clip (by path, see :func:`pseudo_attributes`),
    appended as ``/p<k>``.
    """
    key = f"{clip.machine}/{clip.section}/{clip.attribute_string}"
    if clip.attribute_string == "noAttribute":
        if domain_classes:
            key += f"/{clip.domain}"
        if pseudo is not None and str(clip.path) in pseudo:
            key += f"/p{pseudo[str(clip.path)]}"
    return key


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
    """Model + loss head in one module, so DDP also broadcasts the AdaCos scale buffer.

    ``forward(waves, labels)`` is the plain classification loss. With ``exchange=(partner, branch)``
    it is the FeatEx loss (see :func:`featex_batch`): the head then has ``2 C`` classes.
    """

    def __init__(self, model: torch.nn.Module, head: torch.nn.Module):
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, waves: torch.Tensor, labels: torch.Tensor,
                exchange: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if exchange is None:
            return self.head(self.model(waves), labels)
        parts = list(self.model.branch_embeddings(waves).values())
        return self.head(*featex_batch(parts, labels, *exchange))


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
    """Feature exchange (FeatEx, Wilkinghoff 2024) for a model of several sub-networks.

    Returns ``(embeddings (2B, D), labels (2B, 2C))``: the B original embeddings with labels
    ``[y, 0]``, then B exchanged ones with labels ``[0, (y_i + y_partner) / 2]``. Exchanged sample
    ``i`` is sample ``i``'s embedding with the output of one sub-network (``branch[i]``) taken from
    sample ``partner[i]``. To tell the two halves apart the sub-networks have to agree on *which
    clip* they look at, not only on its class: a self-supervised task that makes the embedding
    carry clip-level detail even where the class labels are coarse (machine types without
    attributes). Choices for three sub-networks (the published form has two): one sub-network is
    exchanged per sample, chosen uniformly; labels mix the two clips' labels half and half.
    """
    partner = partner.to(labels.device)
    branch = branch.to(labels.device)
    swapped = [torch.where((branch == k).unsqueeze(1), p[partner], p) for k, p in enumerate(parts)]
    zeros = torch.zeros_like(labels)
    y = torch.cat([torch.cat([labels, zeros], 1), torch.cat([zeros, 0.5 * (labels + labels[partner])], 1)])
    return torch.cat([torch.cat(parts, 1), torch.cat(swapped, 1)]), y


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
        s = ThreeSubnetSettings(**run.config.settings)
        device = device or resolve_device(s.device)
        model = self._model(s)
        run.load_into(model, "three_subnet")
        return model.to(device).eval()

    # ------------------------------------------------------------------ training
    def train(self, run: Run, ds: Dataset, resume: bool = False, progress: bool = True,
              on_epoch_end: Callable[[int, float], None] | None = None) -> None:
        from asdcore.losses import SubClusterAdaCos, mixup

        s = ThreeSubnetSettings(**run.config.settings)
        rank, world = distributed_env()
        distributed = world > 1
        device = init_distributed(s.device) if distributed else resolve_device(s.device)

        clips = [c for m in run.config.machines for c in training_clips(ds, m)]
        if not clips:
            raise DataError(f"no normal training clips for {', '.join(run.config.machines)} in {ds.root}")
        pseudo = (pseudo_attributes(clips, s.pseudo_classes, s.seed, s.clip_seconds, progress and rank == 0)
                  if s.pseudo_classes else None)
        keys = [class_key(c, s.domain_classes, pseudo) for c in clips]
        classes = sorted(set(keys))
        labels = torch.tensor([classes.index(k) for k in keys])
        machine_ids = torch.tensor([run.config.machines.index(c.machine) for c in clips])
        if rank == 0:
            save_json(run.path / "classes.json", classes)
            run.set_status("training")

        seed_everything(s.seed)
        model = self._model(s)
        n_head = 2 * len(classes) if s.featex else len(classes)
        head = SubClusterAdaCos(n_head, n_subclusters=s.n_subclusters, embed_dim=512, seed=s.seed)
        net = _Classifier(model, head).to(device)
        train_net: torch.nn.Module = net
        if distributed:
            train_net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None)
        opt = torch.optim.Adam(net.parameters(), lr=s.lr)
        n_classes = len(classes)
        per_rank = s.batch_size
        global_batch = per_rank * world

        def batches(epoch: int, gen: torch.Generator):
            order = torch.randperm(len(clips), generator=gen).tolist()
            # every rank walks the same global batches and takes its own slice of each
            n_full = len(order) // global_batch if len(order) >= global_batch else 1
            plan = [order[b * global_batch:(b + 1) * global_batch][rank * per_rank:(rank + 1) * per_rank]
                    for b in range(n_full)]
            plan = [p for p in plan if len(p) > 1]
            mix_gen = epoch_generator(s.seed + 7919 * (rank + 1), epoch)
            for waves, idx in _loader(clips, s.clip_seconds, plan, s.num_workers):
                onehot = torch.nn.functional.one_hot(labels[idx], n_classes).float()
                waves, targets = mixup(waves, onehot, mix_gen, prob=s.mixup_prob)
                groups = machine_ids[idx] if s.featex_partner == "machine" else None
                exchange = featex_draw(len(idx), 3, mix_gen, groups) if s.featex else None
                loss = train_net(waves.to(device, non_blocking=True), targets.to(device), exchange)
                yield len(idx) * world, loss

        t0 = time.perf_counter()
        fit(net, opt, batches, s.epochs, s.seed,
            run.checkpoint_dir / "three_subnet.pt", resume=resume, desc="three-subnet",
            progress=progress and rank == 0, on_epoch_end=on_epoch_end, save=rank == 0)
        if rank == 0:
            run.save_weights("three_subnet", model.state_dict())
            run.set_status("trained", train_seconds=round(time.perf_counter() - t0, 2),
                           nan_guard_hits=int(getattr(head, "nan_guard_hits", 0)), world_size=world)
        if distributed:
            import torch.distributed as dist

            barrier()
            dist.destroy_process_group()
        if rank == 0:
            self.score(run, ds, run.path, progress=progress)
            run.set_status("scored")

    # ------------------------------------------------------------------ embeddings
    def _forward_batch(self, model, batch: torch.Tensor, s) -> torch.Tensor:
        """One batch of fixed-length waves through the frontend (subclasses pass their own options)."""
        return model(batch)

    def _embedding_dim(self, model) -> int:
        return 512

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
    def _backend(self, s: ThreeSubnetSettings):
        from asdcore.scoring import GMMBackend, KMeansBackend

        if self.backend == "kmeans":
            return KMeansBackend(n_clusters=s.kmeans_clusters, seed=s.seed)
        return GMMBackend(n_components=s.gmm_components, covariance_type=s.gmm_covariance, seed=s.seed)

    def fitted_backend(self, scored_dir: Path, machine: str, section: str):
        """The backend saved when ``scored_dir`` was scored (for scoring single clips)."""
        from asdcore.runs import load_arrays
        from asdcore.scoring import GMMBackend, KMeansBackend

        path = Path(scored_dir) / "scores" / "backend" / f"{self.backend}_{machine}_section_{section}.npz"
        if not path.exists():
            raise RunError(f"no fitted {self.backend} backend for {machine} section {section} in {path.parent}; "
                           f"score the data folder with {self.info.name} first")
        cls = KMeansBackend if self.backend == "kmeans" else GMMBackend
        return cls.from_state_dict(load_arrays(path))

    def score_waves(self, run: Run, machine: str, section: str, waves, scored_dir: Path | None = None) -> np.ndarray:
        """Anomaly scores of raw 16 kHz clips with the backend fitted when ``scored_dir`` was scored."""
        s = self.Settings(**run.config.settings)
        device = resolve_device(s.device)
        backend = self.fitted_backend(scored_dir or run.path, machine, section)
        return np.asarray(backend.score(self.embed_waves(self.load_model(run, device), list(waves), s, device)))

    def reusable_embeddings(self, run: Run, ds: Dataset, folder: Path | None) -> Path | None:
        """Embeddings saved in ``folder`` when it scored the same data with the same weights, else None.

        Both backends read the same embeddings; scoring a second backend (the app's first start
        scores K-Means and GMM) then costs a backend fit instead of a second pass of the network.
        """
        import json

        if folder is None:
            return None
        try:
            meta = json.loads((Path(folder) / "scored.json").read_text())
            scored_at = (Path(folder) / "scored.json").stat().st_mtime
            stale = any(w.stat().st_mtime > scored_at for w in Path(run.model_dir).iterdir())
        except (OSError, ValueError):
            return None
        if stale or meta.get("run") != str(Path(run.path).resolve()) or meta.get("data_root") != str(Path(ds.root).resolve()):
            return None
        return Path(folder) / "embeddings"

    def _embed_or_reuse(self, model, clips: list[ClipRecord], s, device: torch.device, progress: bool,
                        reuse: Path | None, machine: str, section: str, split: str) -> np.ndarray:
        if reuse is not None:
            from asdcore.runs import load_arrays

            try:
                saved = load_arrays(reuse / f"{machine}_section_{section}_{split}.npz")
            except (OSError, ValueError, KeyError):
                saved = None
            if saved is not None and list(saved["names"]) == [c.file_name for c in clips]:
                return saved["embeddings"].astype(np.float32)
        return self.embed_clips(model, clips, s, device, progress, f"{machine} {section}: {split}")

    def score(self, run: Run, ds: Dataset, out_dir: Path, progress: bool = True,
              reuse_embeddings_from: Path | None = None) -> pd.DataFrame:
        """Score ``ds``; ``reuse_embeddings_from``: a folder this run scored ``ds`` into (any backend)."""
        s = self.Settings(**run.config.settings)
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
                save_arrays(Path(out_dir) / "scores" / "backend" / f"{self.backend}_{machine}_section_{section}.npz",
                            **backend.state_dict())
                train_scores = np.asarray(backend.score(train_emb), dtype=np.float64)
                test_scores = np.asarray(backend.score(test_emb), dtype=np.float64)
                thresholds[f"{machine}_section_{section}"] = decision_threshold(train_scores)
                for split, clips, emb, sc in (("train", train, train_emb, train_scores), ("test", test, test_emb, test_scores)):
                    for c, v in zip(clips, sc):
                        rows.append({"machine": machine, "section": section, "split": split, "domain": c.domain,
                                     "label": c.label, "file_name": c.file_name, "score": float(v)})
                    embeddings[(machine, section, split)] = ([c.file_name for c in clips], emb)
        clip_scores = pd.DataFrame(rows)
        write_outputs(Path(out_dir), clip_scores, embeddings, thresholds, scored_meta(self.info.name, run, ds))
        return clip_scores
