"""Variants of attempt 3's defect-type step (the gate and the region model, inspectkit/gate.py), measured on the
splits and the attempt-2 checkpoints that ``train.py --attempt all`` left in --results.

Per split: a good-only detector on the split's good training images (coreset seed: the split's, as in train.py,
or --detector-seed), its threshold
tuned on the validation part, region descriptors of every image, then one row per variant of the region model and
of its mix with the classifier. Each row gives the test macro-F1 over the splits and, as the criterion that uses
no test image, the 5-fold cross-validated accuracy of the region model on the split's train+validation defect
images. The classifier's probabilities are attempt 2's, with its 8 test-time views.

A last, nested check asks whether the region model gains from the validation part's defect images, again without
a test image: repeated 5-fold cross-validation on the split's train+validation defects, fitting each fold either
on its training-part images only or on all of its images, and scoring both on the same held-out fold.

Writes results/anomaly_guided_variants_<category>.json (with --detector-seed S: ..._<category>_seed<S>.json).

Examples:
    python -m bench.anomaly_guided_variants --data-root /path/to/mvtec --category bottle --weights mobilenet_v2.pth
    python -m bench.anomaly_guided_variants --data-root /path/to/mvtec --category bottle --weights mobilenet_v2.pth \\
        --detector-seed 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inspectkit.cli import run, script_parser


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    parser.add_argument("--data-root", required=True, help="folder holding the category folders")
    parser.add_argument("--category", default="bottle", help="category whose attempts were trained")
    parser.add_argument("--weights", required=True, help="backbone weights file (the one train.py used)")
    parser.add_argument("--results", default="results",
                        help="train.py's --out: splits_<category>.json and checkpoints/attempt_2")
    parser.add_argument("--detector-seed", type=int, default=None,
                        help="coreset seed of every split's detector (default: each split's seed, as train.py)")
    parser.add_argument("--out", default="results", help="folder for the JSON")
    return parser


def _variants():
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    def logistic(c):
        return lambda: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, random_state=0))

    # scikit-learn 1.9 deprecates SVC(probability=True); it still gives Platt-scaled probabilities, as needed here
    warnings.filterwarnings("ignore", message="The `probability` parameter", category=FutureWarning)
    svc = lambda: make_pipeline(StandardScaler(), SVC(C=1.0, probability=True, random_state=0))  # noqa: E731
    # name: (region model factory, fitted on, weight of the classifier in the mix)
    return {"attempt 3: logistic C=0.1 on train + validation defects, mean with the classifier":
                (logistic(0.1), "train+val", 0.5),
            "the former attempt 3: the same region model on train defects only": (logistic(0.1), "train", 0.5),
            "classifier alone (gate + attempt 2)": (logistic(0.1), "train", 1.0),
            "region model alone (train defects)": (logistic(0.1), "train", 0.0),
            "logistic C=0.03, mean": (logistic(0.03), "train", 0.5),
            "logistic C=1, mean": (logistic(1.0), "train", 0.5),
            "RBF SVM, mean": (svc, "train", 0.5),
            "RBF SVM alone": (svc, "train", 0.0)}


def _nested_train_val_check(splits: list[dict], labels, repeats: int = 3) -> dict:
    """Held-out accuracy of attempt 3's region model fitted with and without the validation part's defects, on
    folds of each split's train+validation defects (no test image): the evidence for refitting on both."""
    import numpy as np
    from sklearn.model_selection import RepeatedStratifiedKFold

    make = _variants()["the former attempt 3: the same region model on train defects only"][0]
    per_split = []
    for s in splits:
        idx, x = s["idx"], s["descriptors"]
        both = np.r_[idx["train"], idx["val"]]
        both = both[labels[both] != "good"]
        in_train = np.isin(both, idx["train"])
        hits = {"train_only": [], "train_val": []}
        folds = RepeatedStratifiedKFold(n_splits=5, n_repeats=repeats, random_state=0)
        for fit, held in folds.split(x[both], labels[both]):
            for name, rows in (("train_only", fit[in_train[fit]]), ("train_val", fit)):
                model = make().fit(x[both[rows]], labels[both[rows]])
                hits[name].append(float((model.predict(x[both[held]]) == labels[both[held]]).mean()))
        per_split.append({name: float(np.mean(v)) for name, v in hits.items()})
    return {"train_only_accuracy": float(np.mean([p["train_only"] for p in per_split])),
            "train_val_accuracy": float(np.mean([p["train_val"] for p in per_split])),
            "per_split": per_split, "folds": f"5-fold x {repeats} repeats on each split's train+val defects"}


def main(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from tqdm import tqdm

    from inspectkit.anomaly import PatchCore, PatchCoreConfig
    from inspectkit.cache import DecodeCache
    from inspectkit.checkpoints import checkpoint_path, load_checkpoint
    from inspectkit.data import load_category
    from inspectkit.gate import region_descriptors, tune_threshold
    from inspectkit.inference import inference_model, split_probabilities, trunk_outputs
    from inspectkit.results import provenance, read_json, write_json
    from inspectkit.tensors import load_images

    device = torch.device("cpu")
    results = Path(args.results)
    manifest = read_json(results / f"splits_{args.category}.json")
    category = load_category(args.data_root, args.category, progress=False)
    files = [img["file"] for img in manifest["images"]]
    labels = np.array([img["label"] for img in manifest["images"]])
    position = {f: i for i, f in enumerate(files)}
    defects = sorted(set(labels) - {"good"})
    size = load_checkpoint(checkpoint_path(results, 2, 0))["config"]["image_size"]  # the attempts' input size
    images = load_images(category, files, size, DecodeCache(), progress=True)
    def build(seed: int) -> PatchCore:
        return PatchCore.build(PatchCoreConfig(image_size=size, seed=seed, validation_share=0.0), args.weights, device)

    detector = build(0 if args.detector_seed is None else args.detector_seed)
    batch = detector.config.batch_size
    features = torch.cat([detector.extract(images[i:i + batch]) for i in tqdm(range(0, len(images), batch),
                                                                            desc="detector features")])
    splits = []
    for k, split in enumerate(tqdm(manifest["splits"], desc="splits")):
        idx = {p: np.array([position[f] for f in split[p]]) for p in ("train", "val", "test")}
        good = idx["train"][labels[idx["train"]] == "good"]
        if args.detector_seed is None:
            detector = build(split["seed"])
        detector.begin_fit(len(good), (size, size))
        for i in range(0, len(good), batch):
            detector.add_good(features[good[i:i + batch]])
        detector.finish_fit()
        patch = torch.cat([detector.patch_scores(features[i:i + batch]) for i in range(0, len(features), batch)])
        checkpoint = load_checkpoint(checkpoint_path(results, 2, k))
        test = idx["test"]
        views = trunk_outputs(inference_model(checkpoint, device), images[test], checkpoint["config"]
                              ["test_time_views"], device, progress=False)
        probs = split_probabilities(checkpoint, views, device).numpy()
        columns = [checkpoint["class_names"].index(d) for d in defects]
        splits.append({"idx": idx, "scores": detector.image_scores(patch),
                       "descriptors": region_descriptors(features, patch),
                       "classifier": probs[:, columns] / probs[:, columns].sum(1, keepdims=True)})

    rows = []
    for name, (make, fitted_on, mix) in _variants().items():
        f1s, cv = [], []
        for s in splits:
            idx, x = s["idx"], s["descriptors"]
            threshold = tune_threshold(s["scores"][idx["val"]], labels[idx["val"]] != "good")["threshold"]
            both = np.r_[idx["train"], idx["val"]]
            both = both[labels[both] != "good"]
            folds = StratifiedKFold(5, shuffle=True, random_state=0)
            cv.append(float((cross_val_predict(make(), x[both], labels[both], cv=folds) == labels[both]).mean()))
            fit = idx["train"][labels[idx["train"]] != "good"] if fitted_on == "train" else both
            region = make().fit(x[fit], labels[fit]).predict_proba(x[idx["test"]])
            mixed = mix * s["classifier"] + (1 - mix) * region
            pred = np.where(s["scores"][idx["test"]] >= threshold, np.array(defects)[mixed.argmax(1)], "good")
            f1s.append(float(f1_score(labels[idx["test"]], pred, average="macro")))
        rows.append({"variant": name, "test_macro_f1_mean": float(np.mean(f1s)), "test_macro_f1": f1s,
                     "cv_accuracy_train_val_defects": float(np.mean(cv))})
        print(f"{name:80s} test macro-F1 {np.mean(f1s):.3f}  cv {np.mean(cv):.3f}")
    nested = _nested_train_val_check(splits, labels)
    print(f"nested check, held-out accuracy of the region model: fitted on train-part defects "
          f"{nested['train_only_accuracy']:.3f}, on train+val defects {nested['train_val_accuracy']:.3f}")
    seed = "each split's seed" if args.detector_seed is None else args.detector_seed
    result = {"category": args.category, "detector_seed": seed, "variants": rows, "nested_train_val_check": nested,
              "note": "the test parts of the splits are shown for the record; choose by the cv column, which uses "
                      "no test image",
              "provenance": provenance(seed=args.detector_seed, weights=detector.weights,
                                       data_root=str(args.data_root))}
    suffix = "" if args.detector_seed is None else f"_seed{args.detector_seed}"
    path = write_json(Path(args.out) / f"anomaly_guided_variants_{args.category}{suffix}.json", result)
    print(f"-> {path}")
    return result


if __name__ == "__main__":
    run(main, get_args_parser())
