"""Pooled, stratified train/val/test splits of a category, their manifest with a content hash per image,
and the check that no test image's content also appears in train or val."""

from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.model_selection import train_test_split

from .cache import content_hash
from .data import Category
from .errors import UserError

DEFAULT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
MAX_SPLITS = 100  # beyond this the splits repeat each other and the checkpoints alone fill a disk
PARTS = ("train", "val", "test")


def pooled_images(category: Category) -> tuple[list[dict], list[str]]:
    """Every usable image (``train/good`` and all of ``test/``) as ``{"file", "label", "sha256"}``.

    Files whose bytes repeat an earlier file are dropped (they would leak across parts); each drop is
    returned as an adjustment.
    """
    images, adjustments, seen = [], [], {}
    for sample in sorted(category.samples, key=lambda s: category.relative(s.path)):
        file = category.relative(sample.path)
        digest = content_hash(sample.path)
        if digest in seen:
            adjustments.append(f"dropped {file}: same content as {seen[digest]}")
            continue
        seen[digest] = file
        images.append({"file": file, "label": sample.label, "sha256": digest})
    return images, adjustments


def _check_class_sizes(labels: list[str], class_names: list[str]) -> None:
    counts = Counter(labels)
    small = {c: counts.get(c, 0) for c in class_names if counts.get(c, 0) < len(PARTS)}
    if small:
        listing = ", ".join(f"{c} ({n})" for c, n in small.items())
        raise UserError(f"too few images to stratify into train/val/test: {listing}; every class needs at least "
                        f"{len(PARTS)} images; add images or remove the class folder")


def split_once(labels: list[str], seed: int, fractions: dict[str, float]) -> tuple[dict[str, list[int]], list[str]]:
    """Stratified indices for train/val/test with scikit-learn, then make sure each class is in every part.

    A class that stratification left out of val or test gets one image moved there from train; each move
    is returned as an adjustment.
    """
    index = np.arange(len(labels))
    y = np.asarray(labels)
    val_share = fractions["val"] / (fractions["train"] + fractions["val"])
    try:
        rest, test = train_test_split(index, test_size=fractions["test"], stratify=y, random_state=seed)
        train, val = train_test_split(rest, test_size=val_share, stratify=y[rest], random_state=seed)
    except ValueError as exc:  # scikit-learn refuses parts smaller than the number of classes
        raise UserError(f"cannot stratify {len(labels)} images into train/val/test ({exc}); "
                        "use a category with more images") from None
    parts = {"train": sorted(train.tolist()), "val": sorted(val.tolist()), "test": sorted(test.tolist())}
    adjustments = []
    for cls in sorted(set(labels)):
        for part in ("test", "val"):
            if not any(labels[i] == cls for i in parts[part]):
                donors = [i for i in parts["train"] if labels[i] == cls]
                moved = donors[-1]
                parts["train"].remove(moved)
                parts[part] = sorted([*parts[part], moved])
                adjustments.append(f"seed {seed}: class '{cls}' had no {part} image after stratifying; "
                                   f"moved one from train")
    return parts, adjustments


def check_split_count(n_splits: int) -> int:
    """``n_splits`` if it is 1 .. MAX_SPLITS; a UserError naming ``--splits`` otherwise."""
    if not 1 <= n_splits <= MAX_SPLITS:
        raise UserError(f"--splits must be 1 to {MAX_SPLITS} (got {n_splits}); each split trains and saves "
                        "its own models, 5 is the usual choice")
    return n_splits


def make_splits(category: Category, n_splits: int, seed: int,
                fractions: dict[str, float] | None = None) -> dict:
    """The split manifest: pooled images with hashes and ``n_splits`` stratified splits (seeds seed..seed+K-1)."""
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    check_split_count(n_splits)
    images, adjustments = pooled_images(category)
    labels = [img["label"] for img in images]
    _check_class_sizes(labels, category.class_names)
    rarest, fewest = min(Counter(labels).items(), key=lambda item: (item[1], item[0]))
    if n_splits > fewest:
        raise UserError(f"--splits {n_splits} is more than the {fewest} images of the rarest class '{rarest}': "
                        f"the splits could not differ in its test images; use --splits {min(5, fewest)} "
                        f"(at most {fewest})")
    splits = []
    for k in range(n_splits):
        parts, moved = split_once(labels, seed + k, fractions)
        adjustments.extend(moved)
        splits.append({"seed": seed + k, **{p: [images[i]["file"] for i in parts[p]] for p in PARTS}})
    manifest = {"category": category.name, "class_names": category.class_names, "fractions": fractions,
                "adjustments": adjustments, "images": images, "splits": splits}
    check_no_overlap(manifest)
    return manifest


def check_no_overlap(manifest: dict) -> None:
    """Raise ValueError if any split shares an image's content hash between test and train/val, or val and train."""
    digest = {img["file"]: img["sha256"] for img in manifest["images"]}
    for split in manifest["splits"]:
        hashes = {p: {digest[f] for f in split[p]} for p in PARTS}
        for a, b in (("test", "train"), ("test", "val"), ("val", "train")):
            shared = hashes[a] & hashes[b]
            if shared:
                raise ValueError(f"split seed {split['seed']}: {len(shared)} image(s) in both {a} and {b} "
                                 f"(by content hash)")
