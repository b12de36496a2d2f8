"""Good-only anomaly detection: a PatchCore-style detector (features, coreset, nearest-neighbour scoring, maps),
a PaDiM-like Gaussian baseline, and the anomaly metrics (AUROC, PRO, F1-optimal threshold).
"""

from .baseline import GaussianBaseline
from .patchcore import PatchCore, PatchCoreConfig

__all__ = ["GaussianBaseline", "PatchCore", "PatchCoreConfig"]
