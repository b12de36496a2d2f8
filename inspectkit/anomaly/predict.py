"""Scoring a folder of new images with a saved detector: the verdict at its good-only threshold, the score normalised
so that the threshold is 0.5, the largest defect region's bounding box in the file's own pixels, and (on request)
an overlay PNG per image. Images stream through in batches, so a folder of any length fits in memory.
``score_folder`` is ``anomaly.py --load FILE --images DIR``: the checks, the scoring, and the CSV and JSON record.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage
from tqdm import tqdm

from ..cache import resize_decoded
from ..errors import UserError
from ..imageio import BadImage, find_image_files, open_image
from ..names import flat_name, plain_name
from ..results import atomic_write, check_not_input, csv_text, ensure_writable_dir, provenance, sha256_file, write_json
from .patchcore import PatchCore
from .runtime import check_runtime

CSV_FIELDS = ("file", "width", "height", "score", "normalized_score", "verdict", "bbox_x0", "bbox_y0", "bbox_x1",
              "bbox_y1", "region_pixels")
DEFECT, GOOD = "defect", "good"


@dataclass
class Prediction:
    """One image's result. ``bbox`` is ``(x0, y0, x1, y1)`` in the file's pixels (x1, y1 exclusive), the box of
    the largest connected region of the map at or above the pixel threshold, for a ``defect`` verdict only."""

    file: str
    width: int
    height: int
    score: float
    normalized_score: float
    verdict: str
    bbox: tuple[int, int, int, int] | None
    region_pixels: int

    def row(self) -> dict:
        box = self.bbox or (None,) * 4
        return {"file": self.file, "width": self.width, "height": self.height, "score": round(self.score, 6),
                "normalized_score": round(self.normalized_score, 6), "verdict": self.verdict,
                **dict(zip(CSV_FIELDS[6:10], box, strict=True)), "region_pixels": self.region_pixels}


def overlay_names(files: list[Path], folder: Path) -> dict[Path, str]:
    """The overlay file name of each image: its path under ``folder`` flattened by ``names.flat_name`` (the label
    export's names), always ``.png``; unique by construction, so ``x.png`` beside ``x.jpg``, or ``a/b.png`` beside
    ``a__b.png``, get one overlay each."""
    names = {path: flat_name(path.relative_to(folder).as_posix(), ".png") for path in files}
    if len(set(names.values())) != len(names):  # flat_name's promise; a broken one must not overwrite silently
        raise RuntimeError("overlay names collide")
    return names


def check_outputs(outputs: list[Path], maps_dir: Path | None, files: list[Path], folder: Path,
                  reads: dict[Path, str]) -> None:
    """Before any work: no output (the CSV, the JSON, an overlay) replaces a file this run reads (one of the
    ``files`` under ``folder``, or one of ``reads``, each path with what it is: the detector); and no overlay goes
    inside ``folder``, where it could replace an image, and would be scored as one by the next run. A path taken
    by the wrong kind of entry is refused here too, not after the scoring."""
    for output in outputs:
        if output.is_dir():
            raise UserError(f"cannot write {output}: it is a folder; remove it or choose another --out")
    if maps_dir is not None and maps_dir.exists() and not maps_dir.is_dir():
        raise UserError(f"cannot write the overlays to {maps_dir}: it is a file; remove it or choose another --out")
    check_not_input(outputs, {**{path: "an image under --images" for path in files}, **reads}, "output")
    if maps_dir is None:
        return
    if maps_dir.resolve().is_relative_to(folder.resolve()):
        raise UserError(f"--save-maps would write the overlays into {maps_dir}, inside the --images folder "
                        f"{folder}, where they would join (or replace) the images; choose an --out outside it")
    check_not_input([maps_dir / name for name in overlay_names(files, folder).values()], reads, "overlay")


def largest_region_box(anomaly_map: np.ndarray, threshold: float) -> tuple[tuple[int, int, int, int] | None, int]:
    """``((x0, y0, x1, y1), pixels)`` of the largest 8-connected region of ``anomaly_map >= threshold`` in map
    pixels (x1, y1 exclusive), or ``(None, 0)`` when no pixel reaches the threshold."""
    labelled, count = ndimage.label(anomaly_map >= threshold, structure=np.ones((3, 3), dtype=int))
    if count == 0:
        return None, 0
    sizes = np.bincount(labelled.ravel())[1:]
    biggest = int(np.argmax(sizes))
    rows, cols = ndimage.find_objects(labelled)[biggest]
    return (cols.start, rows.start, cols.stop, rows.stop), int(sizes[biggest])


def _scaled_box(box: tuple[int, int, int, int], map_shape: tuple[int, int], size: tuple[int, int]
                ) -> tuple[int, int, int, int]:
    """A box on the (H, W) map in the pixels of an image of ``size`` = (width, height)."""
    sx, sy = size[0] / map_shape[1], size[1] / map_shape[0]
    x0, y0, x1, y1 = box
    return (int(np.floor(x0 * sx)), int(np.floor(y0 * sy)), min(size[0], int(np.ceil(x1 * sx))),
            min(size[1], int(np.ceil(y1 * sy))))


def _decode(path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB uint8 at the detector's (H, W) input shape, the way the fit saw its images, and the file's size."""
    image = open_image(path)
    return resize_decoded(image, shape, "rgb"), image.size


def overlay_png(image: np.ndarray, anomaly_map: np.ndarray, pixel_threshold: float, box: tuple | None,
                caption: str, path: Path) -> Path:
    """The image with the map coloured where it reaches the pixel threshold (yellow to red as it rises), the
    largest region's box, and a caption; written atomically as PNG. Plain PIL: one image costs milliseconds."""
    from matplotlib import colormaps

    top = max(float(anomaly_map.max()), pixel_threshold * (1 + 1e-6))
    strength = np.clip((anomaly_map - pixel_threshold) / (top - pixel_threshold), 0.0, 1.0)
    colour = colormaps["autumn_r"](strength)[..., :3] * 255.0
    alpha = np.where(anomaly_map >= pixel_threshold, 0.55, 0.0)[..., None]
    blended = (image * (1 - alpha) + colour * alpha).astype(np.uint8)
    picture = Image.fromarray(blended)
    draw = ImageDraw.Draw(picture)
    if box is not None:
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=(0, 255, 255), width=2)
    draw.rectangle([0, 0, picture.width, 14], fill=(0, 0, 0))
    draw.text((3, 1), caption, fill=(255, 255, 255))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return atomic_write(path, buffer.getvalue())


def _batches(files: list[Path], shape: tuple[int, int], batch_size: int, pool: ThreadPoolExecutor
             ) -> Iterator[tuple[list[tuple[Path, tuple[int, int]]], np.ndarray | None, list[tuple[Path, str]]]]:
    def load(path: Path):
        try:
            return path, *_decode(path, shape)
        except BadImage as exc:
            return path, None, exc.reason

    for start in range(0, len(files), batch_size):
        results = list(pool.map(load, files[start:start + batch_size]))
        good = [(p, size) for p, arr, size in results if arr is not None]
        bad = [(p, reason) for p, arr, reason in results if arr is None]
        arrays = [arr for _, arr, _ in results if arr is not None]
        yield good, (np.stack(arrays) if arrays else None), bad


def predict_folder(detector: PatchCore, folder: str | os.PathLike, *, maps_dir: Path | None = None,
                   batch_size: int | None = None, progress: bool = True, files: list[Path] | None = None
                   ) -> tuple[list[Prediction], list[dict], dict]:
    """Score every image under ``folder`` (recursively; or ``files``, already listed under it). Files that cannot
    be decoded are skipped and returned as ``{"file", "reason"}``, never fatal; a UserError when none could be used.
    With ``maps_dir``, one overlay PNG per image goes there, named after the image's path under ``folder``
    (``overlay_names``). Returns (predictions, skipped, timing)."""
    folder = Path(folder)
    files = files if files is not None else find_image_files(folder, recursive=True)
    overlays = {path: maps_dir / name for path, name in overlay_names(files, folder).items()} if maps_dir else {}
    if detector.image_threshold is None:
        raise UserError("this detector was fitted without a validation share, so it has no threshold to give "
                        "verdicts; fit one with anomaly.py (--validation-share 0.1 is the default)")
    shape = tuple(detector.input_shape)
    batch_size = batch_size or detector.config.batch_size
    predictions, skipped = [], []
    start = time.perf_counter()
    feature_runtime = detector.features.prepare(shape)  # part of loading: the backbone's graph, cached or exported
    graph_s = time.perf_counter() - start
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, \
            tqdm(total=len(files), desc="scoring images", unit="img", disable=not progress, leave=False) as bar:
        for good, arrays, bad in _batches(files, shape, batch_size, pool):
            skipped.extend({"file": p.relative_to(folder).as_posix(), "reason": r} for p, r in bad)
            if arrays is not None:
                scores, maps = detector.score(torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous())
                normalized = detector.normalized(scores)
                for i, (path, size) in enumerate(good):
                    predictions.append(_prediction(detector, folder, path, size, scores[i], normalized[i], maps[i],
                                                   arrays[i], overlays.get(path)))
            bar.update(len(good) + len(bad))
    if not predictions:
        first = skipped[0]
        raise UserError(f"none of the {len(files)} images under --images {folder} could be used "
                        f"(first: {first['file']}: {first['reason']})")
    timing = {"score_s": round(time.perf_counter() - start, 3), "images": len(predictions),
              "per_image_ms": round(1000 * (time.perf_counter() - start) / len(predictions), 2),
              "graph_s": round(graph_s, 3), "feature_runtime": feature_runtime,
              "note": "score_s: decoding, scoring and writing every image, after the detector and its backbone's "
                      "graph (graph_s) were loaded"}
    return predictions, skipped, timing


def _prediction(detector: PatchCore, folder: Path, path: Path, size: tuple[int, int], score: float,
                normalized: float, anomaly_map: np.ndarray, image: np.ndarray, overlay: Path | None) -> Prediction:
    verdict = DEFECT if score >= detector.image_threshold else GOOD
    box, pixels = largest_region_box(anomaly_map, detector.pixel_threshold) if verdict == DEFECT else (None, 0)
    relative = path.relative_to(folder).as_posix()
    if overlay is not None:
        overlay_png(image, anomaly_map, detector.pixel_threshold, box,
                    f"{verdict} {normalized:.2f} (score {score:.3g})", overlay)
    scaled = _scaled_box(box, anomaly_map.shape, size) if box is not None else None
    area_scale = (size[0] * size[1]) / (anomaly_map.shape[0] * anomaly_map.shape[1])
    return Prediction(file=relative, width=size[0], height=size[1], score=float(score),
                      normalized_score=float(normalized), verdict=verdict, bbox=scaled,
                      region_pixels=round(pixels * area_scale))


def predictions_csv(predictions: list[Prediction]) -> str:
    """The predictions as CSV text, one row per image, columns ``CSV_FIELDS`` (an empty box when there is none);
    a file name a spreadsheet would run as a formula is neutralised (``results.csv_cell``)."""
    return csv_text((p.row() for p in predictions), list(CSV_FIELDS))


def as_records(predictions: list[Prediction]) -> list[dict]:
    return [{**asdict(p), "bbox": list(p.bbox) if p.bbox else None} for p in predictions]


THRESHOLD_NOTE = ("set at a {rate:.1%} false-alarm rate on {images} good validation images held out of train/good (no "
                  "defect labels); normalized_score is 0.5 at the threshold, 0 for a typical good image; bbox is the "
                  "largest region at or above the pixel threshold, in the file's pixels (x1, y1 exclusive)")
FILE_NAMES_NOTE = ("file names that are not UTF-8 are written with each such byte as \\xNN; in the CSV, a name a "
                   "spreadsheet would run as a formula (starting with = + - @, tab or carriage return) or starting "
                   "with ' has a ' added in front")


def output_stem(folder: Path) -> str:
    """The name of the --images folder, for ``predictions_<name>.csv``: flattened like every output name made from
    an input name (plain UTF-8, no control characters, short enough for any file system)."""
    return plain_name(folder.resolve().name or "images")


def score_folder(detector_file: str | os.PathLike, folder: str | os.PathLike, out: str | os.PathLike, *,
                 device: str | torch.device = "cpu", save_maps: bool = False, batch_size: int | None = None,
                 command: list[str] | None = None, runtime: str = "auto") -> tuple[dict, Path, Path]:
    """``anomaly.py --load FILE --images DIR``: score every image under ``folder`` with a saved detector and write
    ``<out>/predictions_<DIR name>.csv`` and ``.json`` (and, with ``save_maps``, the overlays). Every check (the
    detector, the folder, the outputs) comes before any work. Returns the JSON record and the two paths."""
    folder = Path(folder)
    detector = PatchCore.load(detector_file, device, check_runtime(runtime, device))
    files = find_image_files(folder, recursive=True)  # a file, a missing or an empty folder fails here
    out = ensure_writable_dir(out)
    name = output_stem(folder)
    maps_dir = out / f"predictions_{name}" if save_maps else None
    csv_path, json_path = out / f"predictions_{name}.csv", out / f"predictions_{name}.json"
    check_outputs([csv_path, json_path], maps_dir, files, folder, reads={Path(detector_file): "the --load detector"})
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be at least 1; got {batch_size}")
    predictions, skipped, timing = predict_folder(detector, folder, maps_dir=maps_dir, batch_size=batch_size,
                                                  files=files)
    result = {
        "images": str(folder),
        "detector_file": str(Path(detector_file)),
        "detector_sha256": sha256_file(detector_file),
        "image_threshold": detector.image_threshold,
        "pixel_threshold": detector.pixel_threshold,
        "threshold_note": THRESHOLD_NOTE.format(rate=detector.config.false_alarm,
                                                images=detector.threshold_info.get("validation_images")),
        "file_names_note": FILE_NAMES_NOTE,
        "config": detector.config.as_dict(),
        "input_shape": list(detector.input_shape),
        "counts": {"scored": len(predictions), "defect": sum(p.verdict == DEFECT for p in predictions),
                   "skipped": len(skipped)},
        "timing": timing,
        "predictions": as_records(predictions),
        "skipped_files": skipped,
        "maps": str(maps_dir) if maps_dir else None,
        "provenance": provenance(seed=detector.config.seed, weights=detector.weights, data_root=str(folder),
                                 command=command),
    }
    atomic_write(csv_path, predictions_csv(predictions))
    write_json(json_path, result)
    return result, csv_path, json_path


def scored_text(result: dict, csv_path: Path, json_path: Path) -> str:
    """What anomaly.py prints after ``score_folder``: the counts, the threshold and the files written."""
    counts = result["counts"]
    return (f"scored {counts['scored']} images in {result['timing']['score_s']:.1f} s: {counts['defect']} defect, "
            f"{counts['scored'] - counts['defect']} good (threshold {result['image_threshold']:.4g}), "
            f"{counts['skipped']} skipped; wrote {csv_path} and {json_path}"
            + (f"; overlays in {result['maps']}" if result["maps"] else ""))
