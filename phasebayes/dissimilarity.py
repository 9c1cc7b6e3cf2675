"""Public import path of the dissimilarity curves; the implementation lives in :mod:`phasebayes.stats`."""

from .stats.classifier_bound import classifier_terms
from .stats.dissimilarity import N_DRAWS, DissimilarityResult, dissimilarity, length_curve
from .stats.divergence import MEASURES, discrete_divergence, g_logodds, window_slots
from .stats.plots import plot_peak_vs_tau
from .stats.total_change import likelihood_terms, stratified_mean, stratified_se

__all__ = ["MEASURES", "N_DRAWS", "dissimilarity", "DissimilarityResult", "g_logodds", "discrete_divergence",
           "window_slots", "likelihood_terms", "stratified_mean", "stratified_se", "classifier_terms",
           "plot_peak_vs_tau", "length_curve"]
