"""What the embedding systems are trained to classify, and the classifier module they train.

Shared by the three-subnetworks system (:mod:`asdcore.systems.three_subnet`) and the SSL systems
(:mod:`asdcore.systems.ssl`):

* :func:`class_key`: the class of a clip (machine type x section x attribute combination, with the
  domain where the settings ask for it);
* :class:`Classifier`: the embedding model and its sub-cluster AdaCos head(s) as one module, so
  ``DistributedDataParallel`` also broadcasts the heads' scale buffers;
* feature exchange (FeatEx), the self-supervised task the three-subnetworks training adds: the
  public form (:func:`featex_public`, :func:`featex_public_draw`) and this project's earlier one
  (:func:`featex_batch`, :func:`featex_draw`).
"""
from __future__ import annotations

import torch

from asdcore.data import ClipRecord


def class_key(clip: ClipRecord, domain_classes: bool = False, pseudo: dict[str, int] | None = None,
              all_domains: bool = False) -> str:
    """The classification target of a clip: machine, section and attribute combination (and domain).

    ``all_domains``: every clip's domain is part of its class, as in ``ssl4asd`` (classes =
    machine type x section x attributes x domain), so a machine type without attributes still has a
    source and a target class (the three-subnet setting ``class_domains``; off by default, measured
    in :class:`asdcore.systems.three_subnet.ThreeSubnetSettings`).
    ``domain_classes`` (without ``all_domains``): only clips without attribute information
    (``noAttribute``) are split by domain. Every DCASE file name carries the domain, so this is label
    information the first-shot setting still has.
    ``pseudo``: pseudo-attribute of a ``noAttribute`` clip (by path, see
    :func:`asdcore.systems.three_subnet.pseudo_attributes`), appended as ``/p<k>``.
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


class Classifier(torch.nn.Module):
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
