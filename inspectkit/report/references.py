"""The report's short reference list: the works it uses, numbered in the order the pages first cite them, and only
those the rendered sections use."""

from __future__ import annotations

from collections.abc import Iterable

WORKS = {
    "mvtec": "P. Bergmann, M. Fauser, D. Sattlegger, C. Steger. MVTec AD: a comprehensive real-world dataset for "
             "unsupervised anomaly detection. CVPR 2019.",
    "kolektorsdd": "D. Tabernik, S. Šela, J. Skvarč, D. Skočaj. Segmentation-based deep-learning approach for "
                   "surface-defect detection. Journal of Intelligent Manufacturing 31, 2020.",
    "mobilenetv2": "M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen. MobileNetV2: inverted residuals and "
                   "linear bottlenecks. CVPR 2018.",
    "logit": "A. K. Menon, S. Jayasumana, A. S. Rawat, H. Jain, A. Veit, S. Kumar. Long-tail learning via logit "
             "adjustment. ICLR 2021.",
    "patchcore": "K. Roth, L. Pemula, J. Zepeda, B. Schölkopf, T. Brox, P. Gehler. Towards total recall in "
                 "industrial anomaly detection. CVPR 2022.",
    "padim": "T. Defard, A. Setkaliev, A. Loesch, R. Audigier. PaDiM: a patch distribution modeling framework for "
             "anomaly detection and localization. ICPR Workshops 2021.",
    "yoloworld": "T. Cheng, L. Song, Y. Ge, W. Liu, X. Wang, Y. Shan. YOLO-World: real-time open-vocabulary object "
                 "detection. CVPR 2024.",
    "sam": "A. Kirillov, E. Mintun, N. Ravi, H. Mao, C. Rolland, L. Gustafson, T. Xiao, S. Whitehead, A. C. Berg, "
           "W.-Y. Lo, P. Dollár, R. Girshick. Segment anything. ICCV 2023.",
}
# Datasets that are not MVTec AD but are read in its layout, by category name, and the work that published each.
DATASETS = {"kolektorsdd": "kolektorsdd"}


class References:
    """The cited works in citation order; ``cite(key)`` gives the number shown on the page."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = list(dict.fromkeys(keys))
        unknown = [k for k in self.keys if k not in WORKS]
        if unknown:
            raise ValueError(f"no reference for {unknown}")

    def cite(self, *keys: str) -> str:
        missing = [k for k in keys if k not in self.keys]
        if missing:  # a template cites a work the sections did not declare: a bug here, not bad input
            raise ValueError(f"the report cites {missing} without listing it; add it in sections.cited_works")
        return "[" + ", ".join(str(self.keys.index(k) + 1) for k in keys) + "]"

    def items(self) -> list[dict]:
        return [{"number": i + 1, "text": WORKS[k]} for i, k in enumerate(self.keys)]
