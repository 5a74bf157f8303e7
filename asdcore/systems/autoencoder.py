"""The DCASE 2023/2024 Task 2 autoencoder baseline as a system (frontend ``ae``).

Backends ``mse`` and ``mahala`` share one trained model per machine type. The frontend
(:class:`AEFrontend`) turns a clip into its per-frame reconstruction errors ``(T, 640)``, the
input of both backends (``input_kind`` ``"frame errors"``, :mod:`asdcore.frontends`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from asdcore.data import AudioError, ClipRecord, Dataset, DataError, check_clips, clip_label, load_clip
from asdcore.frontends import FRAME_ERRORS
from asdcore.runs import Run, RunError, save_arrays
from asdcore.systems import (
    System,
    SystemInfo,
    backend_training_source,
    training_clips,
)
from asdcore.scored import backend_path, scored_meta, section_key, write_outputs
from asdcore.systems.embedding import SectionClips, clips_to_check, score_plan
from asdcore.training import fit, iterate_minibatches, recalibrate_batchnorm, resolve_device, seed_everything

# --------------------------------------------------------------------------- AE baseline


@dataclass
class AESettings:
    """DCASE 2023/2024 Task 2 autoencoder baseline (public recipe).

    Log-mel: 128 mels, n_fft 1024, hop 512, power 2, 10*log10; 5 consecutive frames
    concatenated to 640-d vectors. Autoencoder 640-128-128-128-128-8-128-128-128-128-640 with
    BatchNorm + ReLU. Adam, lr 1e-3, batch 256 vectors, 10 % of the training clips held out for
    the validation loss shown in the progress bar (the baseline holds out 10 % too; the held-out
    clips still take part in fitting the backend). One model per machine type, trained on the
    normal source+target training clips; 100 epochs in the public recipe. Clips are used at
    their native length (the baseline does not pad). After the last epoch the BatchNorm running
    statistics are re-estimated in one pass over the training vectors (see
    :func:`asdcore.training.recalibrate_batchnorm`); the weights are those of the last epoch.
    ``parallel_machines`` > 1 trains that many machine types at once in separate processes
    (same results: each model has its own seed and data).
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    val_split: float = 0.1
    n_mels: int = 128
    n_fft: int = 1024
    hop_length: int = 512
    n_frames: int = 5
    seed: int = 0
    device: str = "auto"
    parallel_machines: int = 1


def _finished(run: Run, machine: str, epochs: int) -> bool:
    """Whether ``machine``'s AE has its weights and its checkpoint has trained ``epochs`` epochs already.

    A resume with more ``--epochs`` continues a finished model from its checkpoint (the run's config then
    records what was really trained); weights without a checkpoint cannot be continued and are refused.
    """
    from asdcore.training import load_checkpoint

    if not (run.model_dir / f"ae_{machine}.safetensors").exists():
        return False
    checkpoint = run.checkpoint_dir / f"ae_{machine}.pt"
    if not checkpoint.exists():
        raise RunError(f"{run.path} has weights for {machine} but no checkpoint to continue training from; "
                       "train a new run (--out) for more epochs")
    return int(load_checkpoint(checkpoint).get("epoch", 0)) >= epochs


def _train_machine(info: SystemInfo, run_path: str, machine: str, clips: list[ClipRecord], resume: bool,
                   progress: bool) -> None:
    """Process-pool entry point: train one machine type's AE in a fresh process."""
    torch.set_num_threads(1)  # several trainings share the cores; one thread each avoids oversubscription
    system = AESystem(info)
    run = Run.open(run_path)
    system._train_machine(run, machine, clips, system.run_settings(run), resume, progress)


def min_samples(s: AESettings | None = None) -> int:
    """The shortest clip (16 kHz samples) the AE can use with settings ``s`` (default: the recipe's): ``n_frames``
    log-mel frames, and more samples than the half window the centred STFT pads by reflection
    (:func:`asdcore.features.min_wave_samples`). The data check (:func:`asdcore.data.check_audio`) flags
    shorter clips with it."""
    from asdcore.features import min_wave_samples

    s = s if s is not None else AESettings()
    return min_wave_samples(s.n_fft, s.hop_length, s.n_frames)


def check_length(n_samples: int, s: AESettings, name: str | Path) -> None:
    """AudioError naming the clip when it is too short for the AE (else torch fails deep inside the STFT)."""
    from asdcore.data import SAMPLE_RATE, AudioError

    need = min_samples(s)
    if n_samples < need:
        raise AudioError(name, f"too short for the AE: {n_samples} samples ({n_samples / SAMPLE_RATE:.3f} s at 16 kHz); "
                               f"it needs at least {need} ({s.n_frames} frames of hop {s.hop_length})")


def logmel_config(s: AESettings):
    """The :class:`~asdcore.features.LogMelConfig` of the AE's input (the settings' log-mel fields)."""
    from asdcore.features import LogMelConfig

    return LogMelConfig(n_fft=s.n_fft, hop_length=s.hop_length, n_mels=s.n_mels, n_frames=s.n_frames)


def new_model(s: AESettings):
    """An untrained autoencoder for the settings' input size (``n_mels * n_frames``)."""
    from asdcore.models.autoencoder import AEConfig, AutoEncoder

    return AutoEncoder(AEConfig(input_dim=s.n_mels * s.n_frames))


class AEFrontend:
    """A run's autoencoders as a :class:`asdcore.frontends.Frontend`: waves -> per-frame reconstruction errors.

    One model per machine type, loaded on first use and kept (:meth:`prepare`); clips are used at
    their native length (no tiling), each at least :func:`min_samples` long.
    """

    input_kind = FRAME_ERRORS

    def __init__(self, run: Run, settings: AESettings, device: torch.device):
        self.run = run
        self.settings = settings
        self.device = device
        self.models: dict[str, torch.nn.Module] = {}

    def prepare(self, machine: str) -> None:
        """Load ``machine``'s model (RunError naming the run's machine types when it has none)."""
        if machine in self.models:
            return
        if machine not in self.run.config.machines:
            raise RunError(
                f"{self.run.path} has no model for machine type {machine!r} (the AE baseline trains one model per "
                f"machine type; this run has {', '.join(self.run.config.machines)}). Train a run on that data first."
            )
        model = new_model(self.settings)
        self.run.load_into(model, f"ae_{machine}")
        self.models[machine] = model.to(self.device).eval()

    @torch.no_grad()
    def logmel_errors(self, logmel: torch.Tensor, machine: str) -> np.ndarray:
        """Reconstruction errors ``(T, n_mels * n_frames)`` of one clip's log-mel ``(n_mels, frames)``."""
        from asdcore.features import frame_stack

        self.prepare(machine)
        x = frame_stack(logmel[None], self.settings.n_frames)[0].to(self.device)
        return (x - self.models[machine](x)).cpu().numpy().astype(np.float64)

    #: Samples per batched log-mel and forward pass of :meth:`embed` (64 clips of 10 s): bounds the memory.
    BATCH_SAMPLES = 64 * 160_000

    @torch.no_grad()
    def embed(self, waves: Iterable[np.ndarray], machine: str) -> list[np.ndarray]:
        """Per-frame reconstruction errors of raw 16 kHz waves (AudioError for a clip too short).

        Clips of equal length go through the log-mel and the model together, one call per group instead
        of one per clip (a batch of uploads is mostly clips of one length); every clip keeps its native
        length, as the baseline scores it, so the errors equal :meth:`logmel_errors` of each clip alone up
        to float rounding.
        """
        from asdcore.features import frame_stack, log_mel

        self.prepare(machine)
        waves = [np.asarray(w, dtype=np.float32) for w in waves]
        for i, w in enumerate(waves):
            check_length(len(w), self.settings, f"clip {i + 1}" if len(waves) > 1 else "the clip")
        cfg = logmel_config(self.settings)
        model = self.models[machine]
        out: list[np.ndarray] = [np.empty(0)] * len(waves)
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(waves):
            by_length.setdefault(len(w), []).append(i)
        for length, members in by_length.items():
            step = max(1, self.BATCH_SAMPLES // length)
            for start in range(0, len(members), step):
                part = members[start:start + step]
                x = frame_stack(log_mel(torch.from_numpy(np.stack([waves[i] for i in part])), cfg).float(),
                                self.settings.n_frames)
                b, t, d = x.shape
                flat = x.reshape(b * t, d).to(self.device)
                errors = (flat - model(flat)).cpu().numpy().astype(np.float64).reshape(b, t, d)
                for j, i in enumerate(part):
                    out[i] = errors[j]
        return out


class _FrameBank:
    """All log-mel frames of a set of clips in one (F, n_mels) tensor plus vector start offsets.

    Batches of 640-d vectors are gathered on the fly, so memory holds log-mels (n_mels floats
    per frame) rather than the 5x larger stacked vectors.
    """

    def __init__(self, logmels: list[torch.Tensor], n_frames: int):
        self.n_frames = n_frames
        self.frames = torch.cat([m.T for m in logmels], dim=0).contiguous()  # (F, M)
        starts, offset = [], 0
        for m in logmels:
            t = m.shape[1]
            if t >= n_frames:
                starts.append(torch.arange(offset, offset + t - n_frames + 1))
            offset += t
        self.starts = torch.cat(starts) if starts else torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.starts)

    def to(self, device: torch.device) -> "_FrameBank":
        """Keep the frames where the model is, so batches are gathered without host copies."""
        self.frames = self.frames.to(device)
        self.starts = self.starts.to(device)
        return self

    def vectors(self, idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(self.starts.device)
        rows = self.starts[idx][:, None] + torch.arange(self.n_frames, device=self.starts.device)[None, :]
        return self.frames[rows].reshape(len(idx), -1)


class AESystem(System):
    Settings = AESettings

    def __init__(self, info: SystemInfo):
        self.info = info
        self.backend = info.backend

    def epoch_units(self, machines: list[str]) -> int:
        return len(machines)  # one model per machine type, trained one after the other

    # ---- features
    def _logmels(self, clips: list[ClipRecord], s: AESettings, progress: bool, desc: str) -> list[torch.Tensor]:
        from tqdm.auto import tqdm

        from asdcore.features import log_mel
        from asdcore.progress import advance

        cfg = logmel_config(s)
        out = []
        for c in tqdm(clips, desc=desc, disable=not progress, unit="clip", leave=False):
            try:
                wave = load_clip(c.path, seconds=None)
                check_length(len(wave), s, c.path)
            except AudioError as exc:  # named as the check before training names it (machine/split/file)
                raise AudioError(c.path, exc.reason, clip_label(c.path)) from None
            out.append(log_mel(torch.from_numpy(wave), cfg)[0].float())
            advance()  # the app's first-start progress bar (asdcore.progress)
        return out

    # ---- training
    def train(self, run: Run, ds: Dataset, resume: bool = False, progress: bool = True,
              on_epoch_end: Callable[[int, float], None] | None = None) -> None:
        """Train one AE per machine type, ``parallel_machines`` at a time (separate processes).

        The machine types are independent models, so on a GPU (step latency bound: the network is
        tiny) or a multi-core CPU they can train side by side; each process writes only its own
        checkpoint and weights files.
        """
        s = self.run_settings(run)
        t0 = time.perf_counter()
        run.set_status("training")
        todo = []
        for machine in run.config.machines:
            if resume and _finished(run, machine, s.epochs):
                continue
            clips = training_clips(ds, machine)
            if not clips:
                raise DataError(f"no normal training clips for {machine} in {ds.root}")
            todo.append((machine, clips))
        # every clip training and scoring will read (decoded: no NaN), before the first machine type trains;
        # a bad clip of the last machine type would otherwise stop the run after the others were trained
        check_clips(clips_to_check(run, ds, [c for _, clips in todo for c in clips], backend_training_source),
                    length_check=lambda n, path: check_length(n, s, path), progress=progress)
        if s.parallel_machines > 1 and len(todo) > 1:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
            with ctx.Pool(min(s.parallel_machines, len(todo))) as pool:
                pool.starmap(_train_machine, [(self.info, str(run.path), m, c, resume, False) for m, c in todo])
        else:
            for machine, clips in todo:
                self._train_machine(run, machine, clips, s, resume, progress, on_epoch_end)
        run.set_status("trained", train_seconds=round(time.perf_counter() - t0, 2))
        self.score_into(run, ds, run.path, progress=progress)
        run.set_status("scored")

    def _train_machine(self, run: Run, machine: str, clips: list[ClipRecord], s: AESettings, resume: bool,
                       progress: bool, on_epoch_end: Callable[[int, float], None] | None = None) -> None:
        device = resolve_device(s.device)
        seed_everything(s.seed)
        logmels = self._logmels(clips, s, progress, f"{machine}: log-mel")
        rng = np.random.default_rng(s.seed)
        n_val = int(round(len(clips) * s.val_split)) if len(clips) >= 10 else 0
        perm = rng.permutation(len(clips))
        val_idx, train_idx = set(perm[:n_val].tolist()), perm[n_val:]
        bank = _FrameBank([logmels[i] for i in sorted(train_idx)], s.n_frames).to(device)
        val_bank = _FrameBank([logmels[i] for i in sorted(val_idx)], s.n_frames).to(device) if n_val else None
        vectors_per_clip = max(len(bank) / max(len(train_idx), 1), 1.0)
        model = new_model(s).to(device)
        # multi-tensor Adam: the same numbers as the per-tensor loop (bit for bit), in a few operations instead of
        # ~10 per tensor; the loop was a fifth of an AE step (the network is tiny)
        opt = torch.optim.Adam(model.parameters(), lr=s.lr, foreach=True)
        loss_fn = torch.nn.MSELoss()

        def batches(epoch: int, gen: torch.Generator) -> Iterable[tuple[int, torch.Tensor]]:
            for idx in iterate_minibatches(len(bank), s.batch_size, gen):
                if len(idx) < 2:  # BatchNorm needs more than one vector
                    continue
                x = bank.vectors(idx)
                yield int(round(len(idx) / vectors_per_clip)), loss_fn(model(x), x)

        def validate() -> float:
            losses = []
            for i in range(0, len(val_bank), 4096):
                x = val_bank.vectors(torch.arange(i, min(i + 4096, len(val_bank))))
                losses.append(float(loss_fn(model(x), x)) * len(x))
            return sum(losses) / max(len(val_bank), 1)

        fit(model, opt, batches, s.epochs, s.seed, run.checkpoint_dir / f"ae_{machine}.pt", resume=resume,
            validate=validate if val_bank is not None and len(val_bank) else None, desc=f"{machine}",
            progress=progress, on_epoch_end=on_epoch_end)
        recalibrate_batchnorm(model, (bank.vectors(torch.arange(i, min(i + s.batch_size, len(bank))))
                                      for i in range(0, len(bank), s.batch_size)))
        run.save_weights(f"ae_{machine}", model.state_dict())

    # ---- scoring
    def frontend(self, run: Run, device: str | None = None, optimize: bool = False) -> AEFrontend:
        """The run's autoencoders (:class:`AEFrontend`); ``optimize`` changes nothing (the models are tiny)."""
        s = self.run_settings(run)
        return AEFrontend(run, s, resolve_device(device or s.device))

    def score(self, run: Run, ds: Dataset, out_dir: Path, progress: bool = True) -> pd.DataFrame | None:
        """Score ``ds`` into ``out_dir``: every model and every clip's header and length are checked first.

        Only headers (:func:`asdcore.data.check_clips` without ``decode``): the AE reads each clip itself, in
        this process, right after, and refuses a bad one with the same line; decoding twice would cost about
        a fifth of the scoring time.
        """
        frontend = self.frontend(run)
        rows, embeddings, thresholds = [], {}, {}
        for machine in sorted({c.machine for c in ds.select(split="test")}, key=str.lower):
            frontend.prepare(machine)  # a machine type the run has no model for is named before anything else
        plan = score_plan(run, ds, backend_training_source)
        s = frontend.settings
        check_clips([c for p in plan for _, clips in p.splits() for c in clips], decode=False,
                    length_check=lambda n, path: check_length(n, s, path), progress=progress)
        for part in plan:
            rows += self._score_section(frontend, out_dir, progress, part, embeddings, thresholds)
        clip_scores = pd.DataFrame(rows)
        write_outputs(Path(out_dir), clip_scores, embeddings, thresholds, scored_meta(self.info.name, run, ds))
        return clip_scores

    def _score_section(self, frontend: AEFrontend, out_dir: Path, progress: bool, part: SectionClips,
                       embeddings: dict, thresholds: dict) -> list[dict]:
        """Fit the backend of one machine type and section (the clips of ``part``), score its clips; fills
        ``embeddings`` and ``thresholds``.

        The threshold comes from held-out scores of the training clips (:func:`asdcore.backends.held_out_scores`:
        the Mahalanobis backend refitted on the errors of 4 of 5 folds, scoring the fifth) by the default rule
        (:func:`asdcore.decisions.default_threshold`). Only the backend is refitted: the autoencoder itself was
        trained on these clips and is not retrained, so its own overfit (training clips reconstructed better than
        new normal clips) stays in the held-out scores; the MSE backend has nothing to fit, so its held-out scores
        are its in-sample ones and that overfit is all that separates them from the test clips.
        """
        from asdcore.backends import held_out_scores, make_backend
        from asdcore.decisions import HELD_OUT_COLUMN, default_threshold

        s = frontend.settings
        machine, section, train, test = part.machine, part.section, part.train, part.test

        def errors(clips: list[ClipRecord], split: str) -> Iterable[np.ndarray]:
            return (frontend.logmel_errors(m, machine)
                    for m in self._logmels(clips, s, progress, f"{machine} {section}: {split}"))

        train_err = list(errors(train, "train"))
        backend = make_backend(self.backend)
        is_target = [c.domain == "target" for c in train]
        if backend.needs_fit:
            backend.fit([e for e, t in zip(train_err, is_target) if not t],
                        [e for e, t in zip(train_err, is_target) if t])
            save_arrays(backend_path(out_dir, self.backend, machine, section), **backend.state_dict())
        train_scores = backend.score(train_err)  # once: the threshold and the rows read the same floats
        held_out = held_out_scores(lambda: make_backend(self.backend), train_err, is_target)
        thresholds[section_key(machine, section)] = default_threshold(train_scores, held_out)
        rows = []
        for split, clips, errs in (("train", train, train_err), ("test", test, None)):
            names, vecs = [], []
            for c, e in zip(clips, errs if errs is not None else errors(clips, "test")):
                score = train_scores[len(names)] if split == "train" else backend.score_clip(e)
                rows.append({"machine": machine, "section": section, "split": split, "domain": c.domain,
                             "label": c.label, "file_name": c.file_name, "score": float(score), "part": c.part})
                if split == "train":
                    rows[-1][HELD_OUT_COLUMN] = float(held_out[len(names)])
                names.append(c.file_name)
                vecs.append(per_band_error(e, s.n_frames))
            embeddings[(machine, section, split)] = (names, np.stack(vecs))
        return rows


def per_band_error(errors: np.ndarray, n_frames: int) -> np.ndarray:
    """Mean squared error per mel band (averaged over the 5 stacked frames and all vectors).

    Stored as the AE's per-clip "embedding": it shows which frequency bands drive the score.
    """
    t, d = errors.shape
    return (errors.reshape(t, n_frames, d // n_frames) ** 2).mean(axis=(0, 1)).astype(np.float32)


