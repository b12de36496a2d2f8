"""Good-only anomaly detection: a PatchCore-style detector (features, coreset, nearest-neighbour scoring, maps),
a PaDiM-like Gaussian baseline, and the anomaly metrics (AUROC, PRO, F1-optimal threshold).
"""

from .baseline import GaussianBaseline
from .config import PatchCoreConfig
from .patchcore import PatchCore

__all__ = ["GaussianBaseline", "PatchCore", "PatchCoreConfig"]
