"""Figures of masks, as pure functions, and what shows them.

- ``metrics``: segmentation metrics over confusion counts (IoU, Dice, ..., AUC).
- ``morphology`` (with ``thinning``): vessel length, width, branching, tortuosity, fractal
  dimension; ``mean_width`` is the project's one width rule.
- ``score``: ``vesselseg score``'s core: pair predictions with annotations and measure them.
- ``overlay``: the vessels tinted over the photograph; ``plots`` and ``html_report``: the
  batch report.
"""
