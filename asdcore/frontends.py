"""The frontend interface: a trained model of a run turning raw 16 kHz waves into what a backend takes.

Every system offers its frontend through one public method, ``System.frontend(run, device)``
(:mod:`asdcore.systems`), so that code scoring single clips (the clip inspector,
:mod:`asdcore.batch`, ``System.score_waves``) needs nothing else of a system than that method and
``System.fitted_backend``: it embeds waves with the frontend and scores the result with the
backend (:mod:`asdcore.backends`). What a frontend gives matches the backends' ``input_kind``:

* ``"embeddings"``: an ``(N, D)`` array, one embedding per clip: the three-subnetworks and SSL
  systems (:class:`asdcore.systems.embedding.EmbeddingFrontend`), one model for every machine type;
* ``"frame errors"``: a list of ``(T, D)`` arrays, the per-frame reconstruction errors of each clip:
  the autoencoder (:class:`asdcore.systems.autoencoder.AEFrontend`), one model per machine type.

A frontend loads its model(s) once, on first use or with :meth:`Frontend.prepare`, and keeps them,
so scoring many clips one after the other pays the loading once (the inspector keeps one per run).
"""
from __future__ import annotations

from typing import Any, ClassVar, Protocol, Sequence, runtime_checkable

import numpy as np

#: ``input_kind`` of frontends giving one ``(N, D)`` array of embeddings.
EMBEDDINGS = "embeddings"
#: ``input_kind`` of frontends giving a list of per-clip ``(T, D)`` reconstruction errors.
FRAME_ERRORS = "frame errors"


@runtime_checkable
class Frontend(Protocol):
    """What every frontend offers (module docstring).

    ``settings``: the run's typed settings (``System.run_settings``), ``device``: where the model runs.
    """

    input_kind: ClassVar[str]
    settings: Any

    def prepare(self, machine: str) -> None:
        """Load the model that embeds clips of ``machine`` (RunError when the run has none)."""
        ...

    def embed(self, waves: Sequence[np.ndarray], machine: str) -> Any:
        """The backend's input for raw 16 kHz mono waves of one machine type (module docstring)."""
        ...
