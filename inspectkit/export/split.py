"""Which part (train, val or test) each image goes to: split 0 of the classifier's split manifest when there is
one, so that no model is validated on images it trained on, else a new manifest made the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..cache import content_hash
from ..data import Category
from ..errors import UserError
from ..results import read_json
from ..splits import PARTS, check_no_overlap, make_splits


@dataclass
class SplitChoice:
    """The part of each image (by file relative to the category folder) and where that came from."""

    part_of: dict[str, str]
    source: str  # the manifest path that was read, or "new"
    seed: int
    manifest: dict | None = None  # set when new: to be saved with the export


def load_manifest_split(path: Path, category: Category) -> SplitChoice:
    """Split 0 of a manifest in the ``results/splits_<category>.json`` format, checked against the data by hash."""
    try:
        manifest = read_json(path)
        split = manifest["splits"][0]
        hashes = {img["file"]: img["sha256"] for img in manifest["images"]}
        part_of = {file: part for part in PARTS for file in split[part]}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise UserError(f"cannot read the split manifest {path} ({exc.__class__.__name__}: {exc}); "
                        "fix or delete it, or pass --splits PATH to another one") from None
    if manifest.get("category") != category.name:
        raise UserError(f"split manifest {path} is for category '{manifest.get('category')}', not "
                        f"'{category.name}'; pass --splits PATH to the right one")
    try:
        check_no_overlap(manifest)
    except ValueError as exc:
        raise UserError(f"split manifest {path} is unsafe: {exc}; make it again with train.py") from None
    for sample in category.samples:
        file = category.relative(sample.path)
        if file in hashes and hashes[file] != content_hash(sample.path):
            raise UserError(f"{file} changed since {path} was made (sha256 differs); make the split again "
                            "with train.py, or delete the manifest to let the export make its own")
    return SplitChoice(part_of, str(path), int(split.get("seed", 0)))


def new_split(category: Category, seed: int) -> SplitChoice:
    """A new stratified 60/20/20 manifest, identical to split 0 of ``train.py --seed SEED``."""
    manifest = make_splits(category, 1, seed)
    split = manifest["splits"][0]
    part_of = {file: part for part in PARTS for file in split[part]}
    return SplitChoice(part_of, "new", seed, manifest)


def choose_split(category: Category, manifest_path: Path, seed: int) -> SplitChoice:
    """Reuse the manifest at ``manifest_path`` when it exists, else make a new split with ``seed``."""
    if manifest_path.is_file():
        return load_manifest_split(manifest_path, category)
    return new_split(category, seed)
