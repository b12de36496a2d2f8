"""The template context: the works cited (only those used, numbered in citation order), the weights in words, and
the package's shape (no torch, no import cycle, small modules with a docstring)."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from report_results import make_results

from inspectkit.report import build_context, collect_inputs
from inspectkit.report.references import References
from inspectkit.report.sections import weights_words
from inspectkit.results import REPO_ROOT, read_json, write_json

PACKAGE = REPO_ROOT / "inspectkit" / "report"


def test_references_are_the_works_used_in_citation_order(tmp_path):
    folder = make_results(tmp_path, seed=1, demo=False)
    context = build_context(collect_inputs(folder))
    refs = context["references"]
    assert refs.keys == ["mvtec", "mobilenetv2", "logit", "patchcore", "padim", "yoloworld", "sam"]
    assert refs.cite("patchcore") == "[4]" and refs.cite("yoloworld", "sam") == "[6, 7]"
    (folder / "export_bottle.json").unlink()
    context = build_context(collect_inputs(folder), allow_missing=True)
    assert "sam" not in context["references"].keys
    with pytest.raises(ValueError, match="sam"):
        context["references"].cite("sam")
    with pytest.raises(ValueError, match="no reference"):
        References(["nobody2099"])


def test_weights_in_words():
    assert weights_words({"spec": "none", "pretrained": False}) == ("randomly initialised weights", None)
    assert weights_words({"spec": "imagenet", "pretrained": True})[0] == "ImageNet weights"
    known = {"spec": "file", "sha256": "e48290fe110c7ccd42034be0f185fc875721e25ac26aacaab286b1ff8ae0e04a",
             "pretrained": True}
    assert "quantisation-aware" in weights_words(known)[1]
    assert weights_words({"spec": "file", "sha256": "00", "pretrained": True}) == ("pretrained weights",
                                                                                   "read from a weights file")


def test_a_random_init_run_says_so_even_when_one_file_is_pretrained(tmp_path):
    folder = make_results(tmp_path, seed=2)
    data = read_json(folder / "anomaly_bottle.json")
    data["provenance"]["weights"] = {"spec": "imagenet", "pretrained": True}
    write_json(folder / "anomaly_bottle.json", data)
    assert build_context(collect_inputs(folder))["random_init"]  # the attempts were random-init


def test_importing_the_report_loads_no_torch():
    code = "import sys, inspectkit.report; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_the_package_has_small_documented_modules_and_no_import_cycle():
    graph = {}
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{path.name} has no docstring saying what it owns"
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 400, path.name
        graph[path.stem] = {node.module for node in ast.walk(tree)
                            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}
    done = set()

    def visit(module, trail):
        assert module not in trail, f"import cycle: {' -> '.join([*trail, module])}"
        if module in done:
            return
        for dependency in graph.get(module, ()):
            visit(dependency, [*trail, module])
        done.add(module)

    for module in graph:
        visit(module, [])
    assert graph["render"] >= {"sections", "words"} and "render" not in graph["sections"]
