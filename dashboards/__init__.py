"""Dashboards: Polars tables and Plotly figures from results on disk (no torch, no ray).

Each view is a function of an :class:`Experiment` (``load_experiment(folder)``) that returns a
figure or a table, usable from Python; :func:`write_dashboard` puts them all in one offline
HTML file and :func:`serve` shows them live while a search runs.
"""

from __future__ import annotations

from ._ablation import ablation_table, format_ablation_table, plot_ablation_forest, plot_ablation_table
from ._ablation_blocks import ablation_blocks_table, plot_ablation_blocks
from ._ablation_scores import plot_ablation_scores
from ._ablation_stats import (
    PairedComparison,
    bootstrap_mean,
    describe_differences,
    fewest_pairs,
    holm,
    paired_comparison,
    pairs_needed,
    sign_flip_pvalue,
    verdict,
)
from ._best import best_trials, plot_confusion_matrix, plot_missing_modality, plot_per_class
from ._compare import plot_compare
from ._config_leaderboard import configuration_leaderboard, plot_configuration_leaderboard
from ._curves import plot_learning_curves
from ._history import plot_optimization_history
from ._importance import param_importances, plot_param_importances
from ._leaderboard import leaderboard, plot_leaderboard
from ._loading import Experiment, Notice, load_experiment, notices
from ._page import write_dashboard
from ._parallel import plot_parallel_coordinate
from ._pareto import pareto_front, plot_pareto_front
from ._replicates import plot_replicates
from ._server import make_server, serve
from ._slices import plot_slice
from ._timeline import plot_timeline

__all__ = [
    "Experiment",
    "Notice",
    "PairedComparison",
    "ablation_blocks_table",
    "ablation_table",
    "best_trials",
    "bootstrap_mean",
    "configuration_leaderboard",
    "describe_differences",
    "fewest_pairs",
    "format_ablation_table",
    "holm",
    "leaderboard",
    "load_experiment",
    "make_server",
    "notices",
    "paired_comparison",
    "pairs_needed",
    "param_importances",
    "pareto_front",
    "plot_ablation_blocks",
    "plot_ablation_forest",
    "plot_ablation_scores",
    "plot_ablation_table",
    "plot_compare",
    "plot_configuration_leaderboard",
    "plot_confusion_matrix",
    "plot_leaderboard",
    "plot_learning_curves",
    "plot_missing_modality",
    "plot_optimization_history",
    "plot_parallel_coordinate",
    "plot_param_importances",
    "plot_per_class",
    "plot_pareto_front",
    "plot_replicates",
    "plot_slice",
    "plot_timeline",
    "serve",
    "sign_flip_pvalue",
    "verdict",
    "write_dashboard",
]
