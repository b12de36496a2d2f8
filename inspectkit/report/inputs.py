"""Finding the report's inputs: which result files of one category are in the results folder, read once, each
missing one with the command that makes it; every category's detector result; and the attempts of other categories
in sub-folders. Nothing here interprets a number.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..anomaly_results import read_category_records
from ..errors import UserError
from ..results import read_json

ATTEMPTS = (1, 2, 3, 4)


@dataclass
class Inputs:
    """Which result files the report reads for one category, and the command that makes each missing one."""

    results_dir: Path
    category: str
    demo: bool
    data_root: str | None
    found: dict[str, Any] = field(default_factory=dict)  # key -> parsed JSON
    missing: dict[str, str] = field(default_factory=dict)  # key -> command that makes it
    detectors: dict[str, dict] = field(default_factory=dict)  # category -> its anomaly_<category>.json
    other_attempts: list[tuple[str, list[dict]]] = field(default_factory=list)  # (sub-folder, attempt_1..4.json)

    def has(self, *keys: str) -> bool:
        return all(k in self.found for k in keys)

    def figure(self, name: str | None) -> str | None:
        """A figure's path relative to the results folder, or None when it was not made."""
        return f"figures/{name}" if name and (self.results_dir / "figures" / name).is_file() else None


def input_files(category: str) -> dict[str, str]:
    """Result key -> file name under the results folder."""
    files = {"stats": f"stats_{category}.json"}
    files.update({f"attempt_{n}": f"attempt_{n}.json" for n in ATTEMPTS})
    files.update({"evaluation": "evaluation.json", "anomaly": f"anomaly_{category}.json",
                  "export": f"export_{category}.json"})
    return files


def find_category(results_dir: Path, category: str | None) -> str:
    """``--category`` if given, else the one category that has a ``stats_<category>.json`` in ``results_dir``."""
    if category:
        return category
    found = sorted(p.name[len("stats_"):-len(".json")] for p in results_dir.glob("stats_*.json")
                   if p.name != "stats_overview.json")
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"no stats_<category>.json in {results_dir}, so the category is unknown; pass --category, "
                        f"or make the results first (python run_all.py --demo --out {results_dir})")
    raise UserError(f"{results_dir} holds results for several categories ({', '.join(found)}); "
                    "choose one with --category")


def command(script: str, inputs: Inputs, *extra: str, out_flag: str = "--out") -> str:
    """The command line that makes one of the report's inputs for this category and results folder."""
    data = ["--demo"] if inputs.demo else ["--category", inputs.category, "--data-root", inputs.data_root or "DATA"]
    argv = ["python", script, *extra, *data, out_flag, str(inputs.results_dir)]
    return " ".join(shlex.quote(a) for a in argv)


def _read(path: Path, category: str) -> Any:
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} ({exc.__class__.__name__}: {str(exc)[:80]}); "
                        "re-run the script that writes it") from None
    said = data.get("category") if isinstance(data, dict) else None
    if said is not None and said != category:  # e.g. a file copied from another category's results
        raise UserError(f"{path} holds results for category '{said}', not '{category}'; re-run the script "
                        f"that writes it for --category {category}, or pass --category {said}")
    return data


def collect_inputs(results_dir: str | os.PathLike, category: str | None = None) -> Inputs:
    """Read every result JSON the report needs; note each missing one with the command that makes it."""
    results_dir = Path(results_dir)
    if results_dir.exists() and not results_dir.is_dir():
        raise UserError(f"--results {results_dir} is a file, not a folder; pass the folder holding the result JSON")
    if not results_dir.is_dir():
        raise UserError(f"results folder {results_dir} does not exist; make the results first "
                        f"(python run_all.py --demo --out {results_dir}), or pass --results DIR")
    category = find_category(results_dir, category)
    found = {key: _read(results_dir / name, category) for key, name in input_files(category).items()
             if (results_dir / name).is_file()}
    provs = [d.get("provenance") or {} for d in found.values() if isinstance(d, dict)]
    demo = any(p.get("demo_data") for p in provs)
    data_root = next((p["data_root"] for p in provs if p.get("data_root")), None)
    inputs = Inputs(results_dir, category, demo, data_root, found)
    inputs.detectors = read_category_records(results_dir)
    if "anomaly" in found:  # the report's own category: the file just read (and checked), whatever else is there
        inputs.detectors[category] = found["anomaly"]
    inputs.other_attempts = other_category_attempts(results_dir, category)
    missing_attempts = [n for n in ATTEMPTS if f"attempt_{n}" not in found]
    for n in missing_attempts:
        which = "all" if len(missing_attempts) == len(ATTEMPTS) else str(n)
        inputs.missing[f"attempt_{n}"] = command("train.py", inputs, "--attempt", which)
    commands = {"stats": command("stats.py", inputs),
                "evaluation": command("evaluate.py", inputs),
                "anomaly": command("anomaly.py", inputs),
                "export": command("export_labels.py", inputs, out_flag="--results")}  # its --out: the dataset
    for key, line in commands.items():
        if key not in found:
            inputs.missing[key] = line
    return inputs


def other_category_attempts(results_dir: Path, category: str) -> list[tuple[str, list[dict]]]:
    """Each sub-folder of the results folder (e.g. ``results/screw``) whose ``attempt_1..4.json`` all exist for
    one category other than the report's: (folder name, the four records)."""
    others = []
    for folder in sorted(p for p in results_dir.iterdir() if p.is_dir()):
        try:
            runs = [read_json(folder / f"attempt_{n}.json") for n in ATTEMPTS]
            theirs = {r["category"] for r in runs}
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a complete set of attempts (or not attempts at all): nothing to show
        if len(theirs) == 1 and category not in theirs:
            others.append((folder.name, runs))
    return others


def missing_message(inputs: Inputs) -> str:
    """One line naming each missing result file and the command that makes it."""
    files = input_files(inputs.category)
    commands = dict.fromkeys(inputs.missing.values())  # the same command may make several files
    parts = []
    for line in commands:
        names = [files[k] for k, c in inputs.missing.items() if c == line]
        parts.append(f"{', '.join(names)}: run `{line}`")
    return (f"missing results in {inputs.results_dir}: " + "; ".join(parts)
            + " (or pass --allow-missing to render placeholders)")


def source_files(inputs: Inputs) -> list[Path]:
    """Every result file the report reads, for the provenance record beside the PDF."""
    files = input_files(inputs.category)
    paths = [inputs.results_dir / files[k] for k in files if k in inputs.found]
    paths += [inputs.results_dir / f"anomaly_{c}.json" for c in inputs.detectors if c != inputs.category]
    paths += [inputs.results_dir / folder / f"attempt_{n}.json" for folder, _ in inputs.other_attempts
              for n in ATTEMPTS]
    return paths
