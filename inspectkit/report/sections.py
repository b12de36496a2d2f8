"""The report's template context: the title block, Q1 and Q5 here, Q2-Q4 from their own modules, the works cited,
and a marked placeholder for each section whose results are missing. Every number and claim on the pages is
computed here or in those modules from the result JSON; the templates only word and format it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from ..errors import UserError
from ..figures.export import export_figure_name
from .classification import (
    attempt_context,
    attempts_context,
    long_tail_context,
    model_name,
    other_attempts_context,
)
from .detection import anomaly_context
from .inputs import ATTEMPTS, Inputs, input_files, missing_message
from .references import DATASETS, References

SECTION_TITLES = {"header": "header", "q1": "Q1 dataset statistics", "q2": "Q2 four attempts",
                  "q3": "Q3 long tail", "q4": "Q4 good-only anomaly detection",
                  "q5": "Q5 labels for YOLO-World and SAM", "references": "the references"}
DEFAULT_COURSE = "Computer Vision"
DEFAULT_HOMEWORK = "Homework: visual inspection of industrial products"
# Weights files known by their sha256 (the offline copies the committed results used), and what they hold.
KNOWN_WEIGHTS = {
    "e48290fe110c7ccd42034be0f185fc875721e25ac26aacaab286b1ff8ae0e04a":
        "TorchVision's quantisation-aware-trained ImageNet release, converted back to 32-bit floats",
}


def stats_context(stats: Mapping) -> dict:
    """Q1: classes, counts per split, image sizes, mask areas and the long-tail ratio."""
    counts = stats["counts"]
    classes = ["good", *stats["defect_classes"]]
    rows = []
    for cls in classes:
        train = counts["train"].get(cls, 0)
        test = counts["test"].get(cls, 0)
        area = stats["mask_area_fraction"].get(cls) if cls != "good" else None
        rows.append({"name": cls, "train": train, "test": test, "total": train + test, "mask_area": area})
    good_total = rows[0]["total"]
    defect_rows = rows[1:]
    defect_total = sum(r["total"] for r in defect_rows)
    rarest = min(defect_rows, key=lambda r: r["total"]) if defect_rows else None
    return {
        "category": stats["category"],
        "defect_classes": stats["defect_classes"],
        "num_defect_classes": stats["num_defect_classes"],
        "rows": rows,
        "num_images": stats["num_images"],
        "split": stats["split"],
        "image_sizes": stats["image_sizes"],
        "good_total": good_total,
        "defect_total": defect_total,
        "rarest": rarest,
        # several when defect classes tie for the smallest count
        "rarest_names": [r["name"] for r in defect_rows if rarest and r["total"] == rarest["total"]],
        "head_to_tail": good_total / rarest["total"] if rarest and rarest["total"] else None,
        "problems": len(stats.get("problems") or []),
    }


def export_context(inputs: Inputs, data: Mapping) -> dict:
    """Q5: instance counts per defect type, multi-instance images, box sizes, polygon fidelity and the figure."""
    return {
        "per_class": data["instances"]["per_class"],
        "total": data["instances"]["total"],
        "defect_images": data["images"]["with_instances"],
        "background_images": data["images"]["background"],
        "multi_instance_images": data["images"]["with_multiple_instances"],
        "box_area": data["box_size"]["all"]["area"],
        "polygon_iou": data["polygon_iou"]["all"],
        "figure": inputs.figure(export_figure_name(inputs.category)),
    }


def weights_words(weights: Mapping | None) -> tuple[str, str | None]:
    """The weights as a grader reads them: ImageNet or random, and which release when it is known by checksum."""
    if not weights or weights.get("spec") == "none" or not weights.get("pretrained", True):
        return "randomly initialised weights", None
    if weights.get("spec") == "imagenet":
        return "ImageNet weights", "TorchVision's own ImageNet release"
    known = KNOWN_WEIGHTS.get(weights.get("sha256") or "")
    return ("ImageNet weights", known) if known else ("pretrained weights", "read from a weights file")


def dataset_name(category: str, demo: bool) -> str:
    if demo:
        return "synthetic demo data"
    return "KolektorSDD" if DATASETS.get(category) == "kolektorsdd" else "MVTec AD"


def cited_works(context: Mapping) -> References:
    """The works the rendered sections cite, in the order the pages cite them."""
    keys = []
    if context["q1"] and not context["demo"]:
        keys.append(DATASETS.get(context["category"], "mvtec"))
    if context["q2"] and context["q2"]["model"] == "MobileNetV2":
        keys.append("mobilenetv2")
    if context["q3"]:
        keys.append("logit")
    if context["q4"]:
        keys += ["patchcore", "padim"]
        keys += [DATASETS[c] for c in context["q4"]["others"] if c in DATASETS and not context["demo"]]
    if context["q5"]:
        keys += ["yoloworld", "sam"]
    return References(keys)


def build_context(inputs: Inputs, *, name: str = "", student_id: str = "", course: str = DEFAULT_COURSE,
                  homework: str = DEFAULT_HOMEWORK, allow_missing: bool = False) -> dict:
    """Everything the templates show, computed from the results; sections without inputs become placeholders."""
    if inputs.missing and not allow_missing:
        raise UserError(missing_message(inputs))
    found = inputs.found
    files = input_files(inputs.category)

    def read(builder: Callable, keys: tuple[str, ...], *args, **kwargs):
        """``builder(*args)``; a key missing from the JSON becomes a UserError naming the files to re-make."""
        try:
            return builder(*args, **kwargs)
        except (KeyError, IndexError, TypeError) as exc:
            names = ", ".join(files[k] for k in keys)
            raise UserError(f"{names} in {inputs.results_dir} lack(s) what the report reads ({exc.__class__.__name__}:"
                            f" {exc}); it was written by another version: re-run the script that makes it") from None

    q1 = read(stats_context, ("stats",), found["stats"]) if inputs.has("stats") else None
    attempts = [read(attempt_context, (f"attempt_{n}",), n, found[f"attempt_{n}"])
                for n in ATTEMPTS if f"attempt_{n}" in found]
    complete = len(attempts) == len(ATTEMPTS)
    others = other_attempts_context(inputs.other_attempts)
    q2 = (read(attempts_context, ("evaluation",), attempts, found["evaluation"])
          if complete and inputs.has("evaluation") else None)
    q3 = read(long_tail_context, ("attempt_3", "attempt_4"), q1, attempts[2], attempts[3]) if complete else None
    q4 = (read(anomaly_context, ("anomaly",), inputs.category, inputs.detectors, demo=inputs.demo,
               figure=inputs.figure(f"anomaly_{inputs.category}.png")) if inputs.has("anomaly") else None)
    q5 = read(export_context, ("export",), inputs, found["export"]) if inputs.has("export") else None

    weights = [a["weights"] for a in attempts] + ([q4["weights"]] if q4 else [])
    random_init = any(w and (w.get("spec") == "none" or not w.get("pretrained", True)) for w in weights)

    def missing_for(*keys: str) -> list[dict]:
        return [{"file": files[k], "command": inputs.missing[k]} for k in keys if k in inputs.missing]

    context = {
        "category": inputs.category,
        "dataset": dataset_name(inputs.category, inputs.demo),
        "datasets": DATASETS,  # categories of other datasets than MVTec AD, and the work each is cited by
        "course": course,
        "homework": homework,
        "name": name,
        "student_id": student_id,
        "demo": inputs.demo,
        "random_init": random_init,
        "model": model_name((attempts[0]["config"].get("arch") if attempts else None)
                            or (q4["method"]["model"] if q4 else "") or ""),
        "weights": weights_words(attempts[0]["weights"] if attempts else q4["weights"] if q4 else None)[0],
        "weights_detail": weights_words(attempts[0]["weights"] if attempts else q4["weights"] if q4 else None)[1],
        "missing": missing_for(*files),
        "q1": q1,
        "q1_missing": missing_for("stats"),
        "q1_figure": inputs.figure((found["stats"].get("figures") or {}).get("counts")) if q1 else None,
        "q2": q2,
        "q2_missing": missing_for(*(f"attempt_{n}" for n in ATTEMPTS), "evaluation"),
        "q3": q3,
        "q3_missing": missing_for("stats", *(f"attempt_{n}" for n in (3, 4))),
        "q4": q4,
        "q4_missing": missing_for("anomaly"),
        "q5": q5,
        "q5_missing": missing_for("export"),
        "others": others,
        "figure_heights": {},  # set by the layout (render.py), as are the page breaks
        "page_breaks": frozenset(),
        "word_counts": {},
    }
    context["references"] = cited_works(context)
    return context


def data_name(inputs: Inputs) -> str | None:
    """The data folder's own name (never the builder's full path), for the provenance record."""
    return Path(inputs.data_root).name if inputs.data_root else None
