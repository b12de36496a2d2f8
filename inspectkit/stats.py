"""Dataset statistics of one category (homework question 1): counts, splits, image sizes, defect areas."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from .data import Category


def category_stats(category: Category) -> dict:
    """The statistics record of a validated category (everything but provenance)."""
    counts = category.counts()
    split = {name: sum(per_class.values()) for name, per_class in counts.items()}
    sizes = Counter((info.width, info.height, info.mode) for info in category.image_info.values())
    areas: dict[str, list[float]] = defaultdict(list)
    for sample in category.samples:
        if sample.mask_path is not None and sample.mask_path in category.mask_fraction:
            areas[sample.label].append(category.mask_fraction[sample.mask_path])
    test_counts = counts["test"]
    defect_total = sum(n for c, n in test_counts.items() if c != "good")
    return {
        "category": category.name,
        "defect_classes": list(category.defect_classes),
        "num_defect_classes": len(category.defect_classes),
        "class_names": category.class_names,
        "counts": counts,
        "num_images": split["train"] + split["test"],
        "split": split,
        "good_total": counts["train"].get("good", 0) + test_counts.get("good", 0),
        "defect_total": defect_total,
        "image_sizes": [{"width": w, "height": h, "mode": m, "count": n} for (w, h, m), n in sizes.most_common()],
        "has_ground_truth": category.has_ground_truth,
        "mask_area_fraction": {
            cls: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v)), "masks": len(v)}
            for cls, v in sorted(areas.items())
        },
        "problems": list(category.problems),
        "skipped_files": list(category.skipped_files),
    }


def format_table(stats: dict) -> str:
    """A plain-text table of the counts per class and split, with sizes and defect areas."""
    classes = stats["class_names"]
    train, test = stats["counts"]["train"], stats["counts"]["test"]
    width = max(12, *(len(c) for c in classes)) + 2
    lines = [f"category {stats['category']}: {stats['num_defect_classes']} defect classes, "
             f"{stats['num_images']} images (train {stats['split']['train']}, test {stats['split']['test']})",
             f"{'class':<{width}}{'train':>7}{'test':>7}{'mask area % (mean, min-max)':>32}"]
    for cls in classes:
        area = stats["mask_area_fraction"].get(cls)
        area_text = (f"{100 * area['mean']:.2f} ({100 * area['min']:.2f}-{100 * area['max']:.2f})"
                     if area else "-")
        lines.append(f"{cls:<{width}}{train.get(cls, 0):>7}{test.get(cls, 0):>7}{area_text:>32}")
    sizes = ", ".join(f"{s['width']}x{s['height']} {s['mode']} ({s['count']})" for s in stats["image_sizes"])
    lines.append(f"image sizes: {sizes}")
    return "\n".join(lines)
