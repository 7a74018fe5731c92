"""The model zoo: one file per family, one registry for all."""
from .registry import (
    FAMILIES,
    REGISTRY,
    SEED_MODELS,
    CamLayer,
    DeckFigure,
    ModelSpec,
    Recipe,
    UnknownArchitecture,
    build_model,
    count_params,
    get_spec,
    measure_gflops,
    model_stats,
    model_table,
)

__all__ = ["FAMILIES", "REGISTRY", "SEED_MODELS", "CamLayer", "DeckFigure", "ModelSpec", "Recipe",
           "UnknownArchitecture", "build_model", "count_params", "get_spec", "measure_gflops", "model_stats",
           "model_table"]
