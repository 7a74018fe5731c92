"""Reports over stored runs, one module per subject: ``tables`` (leaderboard rows, seed groups, filters, the
formatted tables), ``significance`` (paired McNemar tests), ``seminar`` (the deck comparison and caveats),
``exports`` (CSV, Markdown, LaTeX, JSON) and ``deck`` (the deck's figures). No Streamlit: the pages only lay
these frames out. The names below are re-exported so ``from cxrviz.report import X`` keeps working."""
from .deck import DECK, DECK_DEVICE, DECK_N_TEST, SYNTHETIC
from .exports import EXPORT_EXT, EXPORT_MIME, export
from .seminar import caveats, seminar_frame, seminar_table
from .significance import significance, unique_labels
from .tables import (
    HIGHER_BETTER,
    LOWER_BETTER,
    arch_summary,
    best_cells,
    dataset_counts,
    dataset_name,
    default_dataset,
    display_groups,
    display_table,
    filter_frame,
    groups_frame,
    leaderboard_frame,
    recall_columns,
    run_row,
    runs_frame,
    select_runs,
    selected_on,
)

__all__ = ["DECK", "DECK_DEVICE", "DECK_N_TEST", "SYNTHETIC", "EXPORT_EXT", "EXPORT_MIME", "export", "caveats",
           "seminar_frame", "seminar_table", "significance", "unique_labels", "HIGHER_BETTER", "LOWER_BETTER",
           "arch_summary", "best_cells", "dataset_counts", "dataset_name", "default_dataset", "display_groups",
           "display_table", "filter_frame", "groups_frame", "leaderboard_frame", "recall_columns", "run_row",
           "runs_frame", "select_runs", "selected_on"]
