"""inspectkit: industrial visual inspection on MVTec AD-layout datasets.

The library behind the thin scripts at the repository root: data, models, training, anomaly detection,
label export and the report.
"""

__version__ = "0.1.0"
