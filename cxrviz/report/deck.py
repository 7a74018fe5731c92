"""The seminar deck's figures (from the registry's ``ModelSpec.deck``) and the name of the synthetic set."""
from __future__ import annotations

from ..models import REGISTRY

# The seminar deck's figures (20 epochs, Colab GPU, single runs on the 66-image test split), from the registry.
DECK = {s.name: {"display": s.display, "depth": s.depth, "time_min": s.deck.minutes, "acc": s.deck.acc}
        for s in REGISTRY.values() if s.deck is not None}
DECK_N_TEST = 66
DECK_DEVICE = "Colab GPU"

SYNTHETIC = "synthetic"
