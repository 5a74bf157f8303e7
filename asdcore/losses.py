"""Sub-cluster AdaCos loss and waveform-level mixup, following Wilkinghoff's public code.

Sub-cluster AdaCos: every class owns ``K`` sub-cluster centres. Embeddings and centres are
L2-normalised, the logits are ``s * cos(theta)`` over all ``C * K`` centres, one softmax runs over
all of them, the probability of a class is the sum of its ``K`` sub-cluster probabilities, and the
loss is the cross-entropy of those class probabilities with (possibly mixup-soft) labels. The
centres are not trained (``trainable=False`` in the main head of the public systems).

Two scale rules (``rule``), both re-estimated from every training batch (without gradient)
*before* the loss is computed, starting at ``s0 = sqrt(2) * ln(C*K - 1)``:

``"public"`` (default) - as ``ssl4asd/subcluster_adacos.py`` (``SCAdaCos``) computes it::

    s_new = (M + ln B_avg) / cos(min(pi/4, theta_med)) + 1e-7
    M      = max over the batch and all C*K sub-clusters of s * cos
    B_avg  = batch mean of the sum over ALL C*K sub-clusters of exp(s * cos - M)
    theta_med = batch median of  (sum over the K sub-clusters of the label class(es), weighted by
                the (mixup) label, of their angles) x (number of non-zero label entries)

  The median is the "nearest" percentile of the batch (``tfp.stats.percentile``'s default). The
  angle sum is far above pi/4, so the cap always applies and ``s = sqrt(2) * LSE(s * cos)`` up to
  the batch mean: once clips sit closer than 45 degrees to a centre, ``s`` grows geometrically.
  Class probabilities are then clipped to ``[1e-7, 1 - 1e-7]`` before the log, as Keras'
  ``categorical_crossentropy`` does, so a confidently classified clip stops being pulled onto its
  centre (the clip has no gradient). Centres: Glorot-uniform draws (the Keras initialiser of the
  public layer), L2-normalised.

  What we do about the unbounded scale: the log-softmax is computed with log-sum-exp, so any finite
  ``s`` gives finite probabilities, and the clip keeps the loss finite (at most ``-ln 1e-7`` per
  clip). ``s`` itself is capped at :data:`SCALE_MAX` (1e4): only an overflow to inf could follow,
  and at that scale two sub-clusters whose cosines differ by 0.0016 already differ in probability
  by a factor of 1e7, the clip's range, so the softmax is saturated at the clip's resolution for
  everything but near-ties. Every capped batch is counted in ``scale_cap_hits``.

``"textbook"`` - this project's earlier rule (the AdaCos paper's non-target sum): ``B_avg`` sums
only over the sub-clusters of classes whose label weight is 0, ``theta_med`` is the median over the
batch of the angle to the closest sub-cluster of the dominant label class (``torch.quantile``), the
cross-entropy is not clipped, and centres are standard normal draws. Kept for old runs and the
ablation (``bench/ablation.py``).

Both rules: cosines are clamped to ``[-1 + 1e-7, 1 - 1e-7]`` before ``acos``; ``C * K <= 2``
makes the start scale 1; a re-estimated scale that is not finite or not positive is discarded
(the previous one is kept and ``nan_guard_hits`` counts it); a non-finite loss raises
:class:`FloatingPointError`.

Mixup: see :func:`mixup`.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: Margin kept from +-1 when clamping cosines before ``acos`` (its derivative is infinite at +-1).
COS_EPS = 1e-7

#: Keras' ``epsilon()``: class probabilities are clipped to ``[PROB_EPS, 1 - PROB_EPS]`` (public rule).
PROB_EPS = 1e-7

#: Largest AdaCos scale kept (public rule): see the module docstring.
SCALE_MAX = 1e4

#: The scale rules :class:`SubClusterAdaCos` knows.
SCALE_RULES = ("public", "textbook")


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


def public_adacos_scale(cos: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor | float,
                        n_subclusters: int) -> torch.Tensor:
    """One re-estimate of the scale by the public rule (``ssl4asd/subcluster_adacos.py``); no guard.

    ``cos``: ``(B, C*K)`` cosines; ``labels``: float ``(B, C)`` rows (mixup-soft allowed); ``scale``:
    the current ``s``. Returns the 0-d tensor ``(M + ln B_avg) / cos(min(pi/4, theta_med)) + 1e-7``.
    """
    logits = torch.as_tensor(scale, dtype=cos.dtype, device=cos.device) * cos
    top = logits.max()
    b_avg = torch.exp(logits - top).sum(dim=1).mean()
    theta = torch.acos(cos.clamp(-1 + COS_EPS, 1 - COS_EPS))
    y_rep = labels.to(cos.dtype).repeat_interleave(n_subclusters, dim=1)
    theta_class = (y_rep * theta).sum(dim=1) * (labels != 0).sum(dim=1).to(cos.dtype)
    theta_med = torch.quantile(theta_class, 0.5, interpolation="nearest")
    capped = torch.minimum(theta_med, torch.tensor(math.pi / 4, dtype=cos.dtype, device=cos.device))
    return (top + torch.log(b_avg)) / torch.cos(capped) + COS_EPS


def adacos_scale(cos: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor | float,
                 n_subclusters: int) -> torch.Tensor:
    """One re-estimate of the scale by the ``"textbook"`` rule (no guard; may be NaN/inf).

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
    """Sub-cluster AdaCos loss head: ``forward(emb (B, D), labels, weights=None) -> scalar loss``.

    ``labels``: ``(B,)`` integer class ids or ``(B, C)`` soft / one-hot rows; ``weights``: optional
    ``(B,)`` sample weights (the loss is ``sum(w_i * loss_i) / B``, Keras' reduction).
    ``rule``: ``"public"`` or ``"textbook"`` (module docstring).
    Attributes: ``centres`` ``(C*K, D)`` (buffer, or parameter when ``trainable_centres``),
    ``scale`` (0-d buffer, never trained), ``nan_guard_hits`` (discarded scale updates),
    ``scale_cap_hits`` (updates capped at :data:`SCALE_MAX`).
    """

    def __init__(self, n_classes: int, n_subclusters: int = 16, embed_dim: int = 512,
                 trainable_centres: bool = False, seed: int = 0, rule: str = "public"):
        super().__init__()
        if n_classes < 1 or n_subclusters < 1 or embed_dim < 1:
            raise ValueError(f"need n_classes, n_subclusters, embed_dim >= 1; got {n_classes}, "
                             f"{n_subclusters}, {embed_dim}")
        if rule not in SCALE_RULES:
            raise ValueError(f"AdaCos rule must be one of {SCALE_RULES}; got {rule!r}")
        self.n_classes = n_classes
        self.n_subclusters = n_subclusters
        self.embed_dim = embed_dim
        self.rule = rule
        gen = torch.Generator().manual_seed(seed)
        n_centres = n_classes * n_subclusters
        if rule == "public":   # Keras glorot_uniform on the (D, C*K) kernel, then normalised per centre
            limit = math.sqrt(6.0 / (embed_dim + n_centres))
            draws = (torch.rand(n_centres, embed_dim, generator=gen) * 2 - 1) * limit
        else:
            draws = torch.randn(n_centres, embed_dim, generator=gen)
        centres = F.normalize(draws, dim=1)
        if trainable_centres:
            self.centres = nn.Parameter(centres)
        else:
            self.register_buffer("centres", centres)
        self.register_buffer("scale", torch.tensor(initial_scale(n_classes * n_subclusters)))
        self.nan_guard_hits = 0
        self.scale_cap_hits = 0

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
        rule = public_adacos_scale if self.rule == "public" else adacos_scale
        new = rule(cos.double(), labels.double(), self.scale.double(), self.n_subclusters)
        if not bool(torch.isnan(new)) and float(new) > SCALE_MAX and self.rule == "public":
            self.scale_cap_hits += 1
            new = torch.tensor(SCALE_MAX, dtype=new.dtype)
        if not bool(torch.isfinite(new)) or float(new) <= 0.0:
            self.nan_guard_hits += 1
            return False
        self.scale.copy_(new.to(self.scale.dtype))
        return True

    def per_sample_loss(self, cos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(B,)`` cross-entropy of the class probabilities at the current scale (clipped for "public")."""
        log_p = self.log_class_probabilities(cos)
        if self.rule == "public":
            log_p = torch.log(log_p.exp().clamp(PROB_EPS, 1 - PROB_EPS))
        # 0 * log p is taken as 0 even where log p underflows to -inf
        return -torch.where(y > 0, y * log_p, torch.zeros_like(log_p)).sum(dim=1)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        y = soft_labels(labels, self.n_classes).to(emb.device)
        if y.shape[0] != emb.shape[0]:
            raise ValueError(f"{emb.shape[0]} embeddings but {y.shape[0]} labels")
        cos = self.cosines(emb)
        if self.training:
            self.update_scale(cos.detach(), y)
        per_sample = self.per_sample_loss(cos, y)
        if weights is not None:
            per_sample = per_sample * weights.to(per_sample.device, per_sample.dtype)
        loss = per_sample.mean()
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


def mixup_per_sample(waves: torch.Tensor, labels_onehot: torch.Tensor, generator: torch.Generator,
                     prob: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup as ``ssl4asd/mixup_layer.py`` (``MixupLayer``) does it: one coin per clip.

    Clip ``i`` is mixed with probability ``prob`` (its own Bernoulli draw) with the clip at the
    mirrored position of the batch, ``B - 1 - i``: ``lam_i * x_i + (1 - lam_i) * x_{B-1-i}``,
    ``lam_i ~ U(0, 1)``, its label mixed alike; the other clips pass unchanged. Compared with one
    coin per batch (:func:`mixup`, the earlier choice), every batch holds about half mixed and half
    clean clips, so no step trains on mixed clips only. Randomness comes only from ``generator``:
    ``lam`` (B draws) first, then the coins (B draws), whatever they say.
    """
    if waves.shape[0] != labels_onehot.shape[0]:
        raise ValueError(f"{waves.shape[0]} waves but {labels_onehot.shape[0]} label rows")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"mixup prob must lie in [0, 1]; got {prob}")
    b = waves.shape[0]
    lam = torch.rand(b, generator=generator, device=generator.device)
    mix = torch.rand(b, generator=generator, device=generator.device) < prob
    lam = torch.where(mix, lam, torch.ones_like(lam))              # lam = 1: the clip itself
    y = labels_onehot.float()
    lam_w = lam.to(waves.device, waves.dtype).view(-1, *([1] * (waves.dim() - 1)))
    lam_y = lam.to(y.device).view(-1, 1)
    return lam_w * waves + (1 - lam_w) * waves.flip(0), lam_y * y + (1 - lam_y) * y.flip(0)
