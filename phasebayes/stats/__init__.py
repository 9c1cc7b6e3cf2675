"""The statistics layer: numpy kernels and models that never import torch or the judges.

Modules (one concept each):

- :mod:`.divergence` — g-dissimilarities (linear, TV, JS) between discrete distributions and of
  log-odds, and the left/right window layout of every boundary of the checkpoint grid.
- :mod:`.total_change` — the exact-likelihood estimator of the total change (from ``logp``) and
  its Bayesian bootstrap.
- :mod:`.classifier_bound` — the held-out classifier lower bound of the total change (no ``logp``).
- :mod:`.score_bins` — coarsening of judged scores into a few bins per order parameter and the
  joint cells of all of them.
- :mod:`.histogram_posterior` — the Bayesian model of the left/right score histograms (Dirichlet
  with a shared base measure and a no-change limit) giving draws of D per order parameter and joint.
- :mod:`.fractions` — combining those draws with the total change into fractions ρ in [0, 1].
- :mod:`.dissimilarity` and :mod:`.decomposition` — the public entry points and result objects.
- :mod:`.tree_io` — DataTree (netCDF) conversion helpers shared by the results.

The method is described in ``docs/decomposition.md``.
"""
