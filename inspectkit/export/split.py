"""Which part (train, val or test) each image goes to: split 0 of the classifier's split manifest when there is
one, so that no model is validated on images it trained on, else a new manifest made the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..cache import content_hash
from ..data import Category
from ..errors import UserError
from ..names import visible_text
from ..results import read_result, schema_problem
from ..splits import PARTS, check_no_overlap, make_splits


@dataclass
class SplitChoice:
    """The part of each image (by file relative to the category folder) and where that came from."""

    part_of: dict[str, str]
    source: str  # the manifest path that was read, or "new"
    seed: int
    manifest: dict | None = None  # set when new: to be saved with the export


def _manifest_problem(manifest: dict) -> str | None:
    """What is wrong inside a manifest whose top-level fields are right: split 0 and the image entries."""
    if not manifest["splits"]:
        return "it has no splits"
    if (problem := schema_problem(manifest["splits"][0], {part: list for part in PARTS})) is not None:
        return f"split 0: {problem}"
    for i, image in enumerate(manifest["images"]):
        if (problem := schema_problem(image, {"file": str, "sha256": str})) is not None:
            return f"image entry {i}: {problem}"
    return None


def load_manifest_split(path: Path, category: Category) -> SplitChoice:
    """Split 0 of a manifest in the ``results/splits_<category>.json`` format, checked against the data by hash."""
    remake = (f"python train.py --category {category.name} --out {path.parent} (with your data flags), or delete "
              "it to let the export make its own split, or pass --splits PATH to another one")
    manifest = read_result(path, {"category": str, "images": list, "splits": list}, remake, category=category.name)
    if (problem := _manifest_problem(manifest)) is not None:
        raise UserError(f"{path} is damaged or not the file expected: {problem}; make it again with: {remake}")
    split = manifest["splits"][0]
    # the manifest's JSON holds names in their visible form (results.write_json); the category's own names are
    # what the export looks up, so a name that is not UTF-8 is matched by its visible form
    named = {visible_text(category.relative(s.path)): category.relative(s.path) for s in category.samples}
    hashes = {named.get(img["file"], img["file"]): img["sha256"] for img in manifest["images"]}
    part_of = {named.get(file, file): part for part in PARTS for file in split[part]}
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
