"""Sub-cluster AdaCos loss and waveform-level mixup, written from their public descriptions.

Sub-cluster AdaCos (Wilkinghoff): every class owns ``K`` sub-cluster centres on the unit sphere.
Embeddings and centres are L2-normalised, the logits are ``s * cos(theta)`` over all ``C * K``
centres, one softmax runs over all of them, the probability of a class is the sum of its ``K``
sub-cluster probabilities, and the loss is the cross-entropy of those class probabilities with
(possibly mixup-soft) labels. The centres are not trained by default, as in the 2023/2024 systems.

The scale ``s`` is adaptive (AdaCos): it starts at ``sqrt(2) * ln(C*K - 1)`` and, in training
mode, is re-estimated from every batch (without gradient) *before* the loss is computed::

    s_new = (M + ln B_avg) / cos(min(pi/4, theta_med))
    B_avg = mean over the batch of  sum over non-target sub-clusters of exp(s * cos(theta) - M)

``M`` is one scalar, the largest non-target logit of the batch: it only keeps the exponentials
in range and cancels out (``M + ln B_avg`` is ``ln`` of the batch mean of the non-target sums).

Choices the public description leaves open:

* Non-target sub-clusters: all ``K`` sub-clusters of every class whose label weight is exactly 0.
  With mixup both mixed classes count as targets (some implementations instead treat every
  label below 1 as non-target, which makes all sub-clusters of a mixed sample non-target; we
  keep "non-target" meaning "not in the label").
* ``theta_med``: per sample, the angle to the *closest* sub-cluster of the dominant label class
  (largest label weight; ties go to the lower class index), then the median over the batch
  (``torch.quantile(0.5)``, i.e. the mean of the two middle values for an even batch).
* Centres: standard normal draws from a ``torch.Generator`` seeded with ``seed`` (directions
  uniform on the sphere), L2-normalised; row ``c * K + k`` is sub-cluster ``k`` of class ``c``.
* ``C * K <= 2`` makes ``sqrt(2) * ln(C*K - 1)`` zero or undefined; the start scale is then 1.
* NaN guard: cosines are clamped to ``[-1 + 1e-7, 1 - 1e-7]`` before ``acos``. A re-estimated
  scale that is not finite or not positive (e.g. NaN embeddings, or no non-target sub-cluster in
  the batch so that ``B_avg`` = 0) is discarded: the previous scale is kept and
  ``nan_guard_hits`` counts it. A non-finite loss raises :class:`FloatingPointError`.

Mixup: see :func:`mixup`.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: Margin kept from +-1 when clamping cosines before ``acos`` (its derivative is infinite at +-1).
COS_EPS = 1e-7


def initial_scale(n_logits: int) -> float:
    """AdaCos start scale ``sqrt(2) * ln(n_logits - 1)``; 1.0 when that is not positive (n_logits <= 2)."""
    if n_logits <= 2:
        return 1.0
    return math.sqrt(2.0) * math.log(n_logits - 1)


def soft_labels(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Labels as float ``(B, C)`` rows: ``(B,)`` integer class ids become one-hot, ``(B, C)`` pass through.

    Soft rows must be non-negative; they are used as given (mixup rows already sum to 1).
    """
    if labels.dim() == 1:
        if labels.dtype.is_floating_point:
            raise ValueError("1-D labels must be integer class ids")
        if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"class ids must lie in [0, {n_classes}); got {labels.min().item()}..{labels.max().item()}")
        return F.one_hot(labels.long(), n_classes).float()
    if labels.dim() != 2 or labels.shape[1] != n_classes:
        raise ValueError(f"labels must be (B,) ids or (B, {n_classes}) rows; got shape {tuple(labels.shape)}")
    return labels.float()


def adacos_scale(cos: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor | float,
                 n_subclusters: int) -> torch.Tensor:
    """One AdaCos re-estimate of the scale from a batch (no guard; may be NaN/inf).

    ``cos``: ``(B, C*K)`` cosines to the centres; ``labels``: float ``(B, C)`` rows; ``scale``: the
    current scale ``s``. Returns the 0-d tensor ``(M + ln B_avg) / cos(min(pi/4, theta_med))``
    (see the module docstring for ``M``, ``B_avg`` and ``theta_med``).
    """
    b, n_logits = cos.shape
    n_classes = labels.shape[1]
    target = (labels > 0).repeat_interleave(n_subclusters, dim=1)            # (B, C*K)
    logits = torch.as_tensor(scale, dtype=cos.dtype, device=cos.device) * cos
    non_target = logits.masked_fill(target, float("-inf"))
    top = non_target.max()                                                   # -inf if no non-target
    b_avg = torch.exp(non_target - top).sum(dim=1).mean()
    dominant = labels.argmax(dim=1)
    cos_target = cos.view(b, n_classes, n_subclusters)[torch.arange(b, device=cos.device), dominant]
    theta = torch.acos(cos_target.max(dim=1).values.clamp(-1 + COS_EPS, 1 - COS_EPS))
    theta_med = torch.quantile(theta, 0.5)
    capped = torch.minimum(theta_med, torch.tensor(math.pi / 4, dtype=cos.dtype, device=cos.device))
    return (top + torch.log(b_avg)) / torch.cos(capped)


class SubClusterAdaCos(nn.Module):
    """Sub-cluster AdaCos loss head: ``forward(emb (B, D), labels) -> scalar loss``.

    ``labels``: ``(B,)`` integer class ids or ``(B, C)`` soft / one-hot rows.
    Attributes: ``centres`` ``(C*K, D)`` (buffer, or parameter when ``trainable_centres``),
    ``scale`` (0-d buffer, never trained), ``nan_guard_hits`` (int, discarded scale updates).
    """

    def __init__(self, n_classes: int, n_subclusters: int = 16, embed_dim: int = 512,
                 trainable_centres: bool = False, seed: int = 0):
        super().__init__()
        if n_classes < 1 or n_subclusters < 1 or embed_dim < 1:
            raise ValueError(f"need n_classes, n_subclusters, embed_dim >= 1; got {n_classes}, "
                             f"{n_subclusters}, {embed_dim}")
        self.n_classes = n_classes
        self.n_subclusters = n_subclusters
        self.embed_dim = embed_dim
        gen = torch.Generator().manual_seed(seed)
        centres = F.normalize(torch.randn(n_classes * n_subclusters, embed_dim, generator=gen), dim=1)
        if trainable_centres:
            self.centres = nn.Parameter(centres)
        else:
            self.register_buffer("centres", centres)
        self.register_buffer("scale", torch.tensor(initial_scale(n_classes * n_subclusters)))
        self.nan_guard_hits = 0

    def cosines(self, emb: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every embedding to every centre, ``(B, C*K)``, in float32."""
        if emb.dim() != 2 or emb.shape[1] != self.embed_dim:
            raise ValueError(f"embeddings must be (B, {self.embed_dim}); got shape {tuple(emb.shape)}")
        centres = F.normalize(self.centres.float(), dim=1)
        return F.normalize(emb.float(), dim=1) @ centres.t()

    def log_class_probabilities(self, cos: torch.Tensor) -> torch.Tensor:
        """``log p(class)``, ``(B, C)``: log-sum-exp of a class's sub-cluster logits minus that over all."""
        logits = self.scale * cos
        per_class = torch.logsumexp(logits.view(-1, self.n_classes, self.n_subclusters), dim=2)
        return per_class - torch.logsumexp(logits, dim=1, keepdim=True)

    def class_probabilities(self, emb: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, C)`` at the current scale (rows sum to 1); no scale update."""
        return self.log_class_probabilities(self.cosines(emb)).exp()

    @torch.no_grad()
    def update_scale(self, cos: torch.Tensor, labels: torch.Tensor) -> bool:
        """Re-estimate the scale from a batch; keep the old one (and count a guard hit) if invalid.

        Returns True when the scale was updated.
        """
        new = adacos_scale(cos, labels, self.scale, self.n_subclusters)
        if not bool(torch.isfinite(new)) or float(new) <= 0.0:
            self.nan_guard_hits += 1
            return False
        self.scale.copy_(new.to(self.scale.dtype))
        return True

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        y = soft_labels(labels, self.n_classes).to(emb.device)
        if y.shape[0] != emb.shape[0]:
            raise ValueError(f"{emb.shape[0]} embeddings but {y.shape[0]} labels")
        cos = self.cosines(emb)
        if self.training:
            self.update_scale(cos.detach(), y)
        log_p = self.log_class_probabilities(cos)
        # 0 * log p is taken as 0 even where log p underflows to -inf
        loss = -torch.where(y > 0, y * log_p, torch.zeros_like(log_p)).sum(dim=1).mean()
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(
                f"sub-cluster AdaCos loss is {loss.item()} (scale {self.scale.item():.4g}, "
                f"non-finite embeddings: {int((~torch.isfinite(emb)).any(dim=1).sum())} of {emb.shape[0]}); "
                "lower the learning rate or check the inputs")
        return loss


# --------------------------------------------------------------------------- mixup


def sample_beta(n: int, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws from Beta(alpha, alpha) using only ``generator`` (float32, generator's device).

    ``alpha == 1`` is Uniform(0, 1), drawn directly. Otherwise ``G1 / (G1 + G2)`` with two
    Gamma(alpha) draws from :func:`sample_gamma` (torch's own Beta sampler takes no generator).
    """
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0; got {alpha}")
    if alpha == 1.0:
        return torch.rand(n, generator=generator, device=generator.device)
    g1 = sample_gamma(n, alpha, generator)
    g2 = sample_gamma(n, alpha, generator)
    return g1 / (g1 + g2)


def sample_gamma(n: int, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` Gamma(alpha, 1) draws by Marsaglia and Tsang's method, randomness from ``generator`` only.

    For ``alpha < 1`` a Gamma(alpha + 1) draw is multiplied by ``U ** (1 / alpha)``.
    """
    dev = generator.device
    boost = alpha < 1.0
    a = alpha + 1.0 if boost else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n, dtype=torch.float64, device=dev)
    todo = torch.arange(n, device=dev)
    while todo.numel():
        z = torch.randn(todo.numel(), generator=generator, device=dev, dtype=torch.float64)
        u = torch.rand(todo.numel(), generator=generator, device=dev, dtype=torch.float64)
        v = (1.0 + c * z) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        out[todo[ok]] = d * v[ok]
        todo = todo[~ok]
    if boost:
        u = torch.rand(n, generator=generator, device=dev, dtype=torch.float64)
        out = out * u ** (1.0 / alpha)
    return out.float()


def mixup_params(batch_size: int, generator: torch.Generator, alpha: float = 1.0,
                 prob: float = 0.5) -> tuple[bool, torch.Tensor, torch.Tensor]:
    """The random draws of one :func:`mixup` call: ``(apply, lam (B,), partner (B,))``.

    All three are drawn on every call, whether or not mixup is applied, so the generator's
    stream does not depend on the coin flip.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"mixup prob must lie in [0, 1]; got {prob}")
    coin = torch.rand(1, generator=generator, device=generator.device).item()
    lam = sample_beta(batch_size, alpha, generator)
    partner = torch.randperm(batch_size, generator=generator, device=generator.device)
    return coin < prob, lam, partner


def mixup(waves: torch.Tensor, labels_onehot: torch.Tensor, generator: torch.Generator,
          alpha: float = 1.0, prob: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Waveform-level mixup of a batch, applied with probability ``prob`` (0.5 as in the strong systems).

    Sample ``i`` becomes ``lam_i * x_i + (1 - lam_i) * x_p(i)`` and its label
    ``lam_i * y_i + (1 - lam_i) * y_p(i)``, with ``p`` a random permutation of the batch and one
    ``lam_i ~ Beta(alpha, alpha)`` per sample; the default ``alpha = 1`` is Uniform(0, 1) (the
    public sub-cluster AdaCos systems draw lambda uniformly). Randomness comes only from
    ``generator`` (same seed, same result). Returns ``(waves, float labels)``; when the coin says
    no, the waves are returned unchanged and the labels as float.
    """
    if waves.shape[0] != labels_onehot.shape[0]:
        raise ValueError(f"{waves.shape[0]} waves but {labels_onehot.shape[0]} label rows")
    apply, lam, partner = mixup_params(waves.shape[0], generator, alpha, prob)
    y = labels_onehot.float()
    if not apply:
        return waves, y
    partner = partner.to(waves.device)
    lam_w = lam.to(waves.device, waves.dtype).view(-1, *([1] * (waves.dim() - 1)))
    lam_y = lam.to(y.device).view(-1, 1)
    p_y = partner.to(y.device)
    return lam_w * waves + (1 - lam_w) * waves[partner], lam_y * y + (1 - lam_y) * y[p_y]
