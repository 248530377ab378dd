"""One stage table: the CLI's verbs, ``run``, ``demo`` and the notebook ``Study`` call each stage through
:mod:`analytics.stages`, so ``[compute]`` is honoured by every path and no stage is loaded by a name string."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from study_builders import study_toml, write_study

import cohortlab
from analytics.cli import main
from pipeline.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
RAY = "ray://ray-head.invalid:10001"  # never reached: the Ray runner's embed is replaced in these tests


def _routes_study(root: Path, compute: str) -> Path:
    """Three patients, one feature set (no slides: nothing to embed), ``compute`` as the ``[compute]`` lines."""
    root.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"patient_id": ["P1", "P2", "P3"], "center": ["A", "A", "B"], "age": [50, 61, 47],
                  "label": [0, 1, 1]}).write_csv(root / "patients.csv")
    (root / "study.toml").write_text(
        '[study]\nname = "routes"\n[manifests]\npatients = "patients.csv"\n'
        '[[feature_sets]]\nname = "tiles"\nmodality = "wsi"\nencoder = "resnet18"\nweights = "random"\n'
        f"[compute]\n{compute}\n", encoding="utf-8")
    return root / "study.toml"


@pytest.fixture
def runners(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Replace the local and the Ray runner's ``embed`` by recorders; the calls, in order, as (runner, kwargs)."""
    from pipeline import embed as local_runner
    from pipeline import ray_runner

    calls: list[tuple[str, dict[str, Any]]] = []

    def recorder(runner: str) -> Callable[..., local_runner.EmbedResult]:
        def embed(study: Any, **kwargs: Any) -> local_runner.EmbedResult:
            calls.append((runner, kwargs))
            return local_runner.EmbedResult()
        return embed

    monkeypatch.setattr(local_runner, "embed", recorder("local"))
    monkeypatch.setattr(ray_runner, "embed", recorder("ray"))
    return calls


def _cli_code(args: list[str]) -> Callable[[Path], Any]:
    def call(toml: Path) -> Any:
        assert main([*args[:1], str(toml), *args[1:]]) == 0
    return call


def _run(toml: Path) -> Any:
    from analytics.run import run

    result = run(load_config(toml), progress=False)
    assert result.ok, str(result)


def _demo(toml: Path) -> Any:
    from analytics.demo import demo

    result = demo(toml.parent, progress=False)  # an existing study.toml is reused, not written again
    assert result.ok, str(result)


def _study_run(toml: Path) -> Any:
    result = cohortlab.load_study(toml).run(progress=False)
    assert result.ok, str(result)


ENTRY_POINTS: dict[str, Callable[[Path], Any]] = {
    "cohortlab embed": _cli_code(["embed"]),
    "cohortlab run": _cli_code(["run"]),
    "run()": _run,
    "demo()": _demo,
    "Study.embed()": lambda toml: cohortlab.load_study(toml).embed(progress=False),
    "Study.run()": _study_run,
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_path_embeds_on_ray_when_compute_says_so(
    entry: str, tmp_path: Path, runners: list[tuple[str, dict[str, Any]]]
) -> None:
    toml = _routes_study(tmp_path / "study", f'ray = "{RAY}"\nray_retries = 4')
    ENTRY_POINTS[entry](toml)
    assert [runner for runner, _ in runners] == ["ray"]
    kwargs = runners[0][1]
    assert (kwargs["ray_address"], kwargs["retries"], kwargs["feature_set"]) == (RAY, 4, None)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_path_embeds_here_without_compute_ray(
    entry: str, tmp_path: Path, runners: list[tuple[str, dict[str, Any]]]
) -> None:
    toml = _routes_study(tmp_path / "study", "ray_retries = 4")
    ENTRY_POINTS[entry](toml)
    assert [runner for runner, _ in runners] == ["local"]
    assert "ray_address" not in runners[0][1]


def test_the_ray_option_overrides_compute(
    tmp_path: Path, runners: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    toml = _routes_study(tmp_path / "study", "")
    assert main(["embed", str(toml), "--ray", "auto", "--device", "cpu"]) == 0
    cohortlab.load_study(toml).embed(device="cpu", ray="local", progress=False)
    assert [(r, k["ray_address"], k["device"]) for r, k in runners] == [("ray", "auto", "cpu"), ("ray", "local", "cpu")]
    assert "no feature sets to embed" in capsys.readouterr().out  # the result, printed as the table says


def test_a_shard_on_ray_is_refused_before_any_embedding(
    tmp_path: Path, runners: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    toml = _routes_study(tmp_path / "study", f'ray = "{RAY}"')
    assert main(["embed", str(toml), "--shard", "0/2"]) == 1
    assert capsys.readouterr().err.strip() == \
        "error: --shard and --ray: Ray spreads the sources itself; give one of them"
    study = cohortlab.load_study(toml)
    with pytest.raises(ConfigError, match=r"shard 0/2 and \[compute\] ray = 'ray://ray-head.invalid:10001' in "
                                          r".*study.toml: Ray spreads the sources itself"):
        study.embed(shard=(0, 2), progress=False)
    with pytest.raises(ConfigError, match="shard 1/2 and ray 'auto': Ray spreads"):
        study.embed(shard=(1, 2), ray="auto", progress=False)
    assert runners == []


# --- the table itself ---------------------------------------------------------------------------------------


def test_the_table_names_each_stage_once_in_run_order(tmp_path: Path) -> None:
    from analytics import stages

    assert [s.name for s in stages.STAGES] == ["ingest", "embed", "cohort", "fit", "validate", "explain", "report",
                                               "verify"]
    for s in stages.STAGES:  # a function of the table's module, named after its stage: no string to resolve
        assert s.function is getattr(stages, s.name) and s.function.__module__ == "analytics.stages"
    bare = load_config(_routes_study(tmp_path / "bare", ""))
    assert [s.name for s in stages.for_run(bare)] == ["ingest", "embed", "report"]
    clinical = _clinical_study(tmp_path / "clinical", "")
    assert [s.name for s in stages.for_run(clinical.config)] == ["ingest", "cohort", "fit", "validate", "explain",
                                                                 "report"]


def test_run_skips_explain_as_the_table_says(tmp_path: Path) -> None:
    from analytics import stages

    study = _clinical_study(tmp_path, "[explain]\nenabled = false\n").config
    out = stages.BY_NAME["explain"].run(study, progress=False)
    assert isinstance(out, stages.Skipped) and str(out) == "skipped: [explain] enabled = false in study.toml"
    assert not (study.report_dir / "explain").exists()


ENTRY_MODULES = ["analytics.cli", "analytics.run", "analytics.demo", "analytics.stages", "cohortlab.study"]


@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_no_entry_point_loads_a_module_by_name(module: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"{module} is missing"
    path = spec.origin
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[0] == "importlib"}, f"{path} imports importlib"
    called = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
              for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert not called & {"import_module", "find_spec", "__import__", "_entry"}, path


def test_the_import_contracts_see_every_stage() -> None:
    """What the CLI and the table call is in the import graph the contracts check (no dependency is hidden)."""
    import grimp

    graph = grimp.build_graph("analytics", "pipeline", "cohortlab", exclude_type_checking_imports=True)
    table = graph.find_modules_directly_imported_by("analytics.stages")
    assert {"pipeline.ingest", "pipeline.embed", "pipeline.ray_runner", "analytics.cohort", "analytics.fit",
            "analytics.validation.stage", "analytics.explain.study", "analytics.report", "analytics.verify"} <= table
    assert {"analytics.stages", "analytics.run", "analytics.demo"} <= graph.find_modules_directly_imported_by(
        "analytics.cli")
    assert "analytics.stages" in graph.find_modules_directly_imported_by("cohortlab.study")


def test_the_cli_and_the_table_stay_light_to_import() -> None:
    code = ("import sys, analytics.cli, analytics.stages, analytics.run\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'shap', 'matplotlib', 'duckdb', 'polars') "
            "if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", cwd="/",
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.strip()
    assert "torch" not in loaded and "sklearn" not in loaded and "shap" not in loaded, loaded


# --- Study.explain() ----------------------------------------------------------------------------------------


def _clinical_study(root: Path, extra: str) -> cohortlab.Study:
    """60 patients of two centres, one logistic model on a marker; ``extra`` appended to study.toml."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    n = 60
    marker = rng.normal(0, 1, n).round(3)
    label = (rng.random(n) < 1 / (1 + np.exp(-2 * marker))).astype(int)
    patients = pl.DataFrame({"patient_id": [f"P{i:02d}" for i in range(n)],
                             "center": np.where(np.arange(n) < 40, "A", "B"), "marker": marker, "label": label})
    toml = study_toml("explainable", 3, '[[models]]\nname = "marker"\nkind = "logistic"\nclinical = ["marker"]\n'
                      + extra)
    return cohortlab.load_study(write_study(root, patients, "c.label, c.marker", toml))


def test_study_explain_writes_what_cohortlab_explain_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _clinical_study(tmp_path, "")
    study.ingest(progress=False)
    study.fit(progress=False)
    result = study.explain(progress=False)
    [model] = result.models
    assert (model.name, model.status) == ("marker", "explained") and model.explained > 0
    assert result.manifest.is_file() and result.manifest.parent == study.report_dir / "explain"
    # the command line finds the notebook's explanations current: same settings, same files
    written = {p: p.read_bytes() for p in result.manifest.parent.rglob("*") if p.is_file()}
    assert main(["explain", str(study.root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"explanations: {result.manifest}\n") and "marker" in out and "up to date" in out
    assert {p: p.read_bytes() for p in written} == written
    # and both say the same for a model the study does not have
    with pytest.raises(cohortlab.CohortlabError, match="nope") as raised:
        study.explain(models=["nope"], progress=False)
    assert main(["explain", str(study.root), "--model", "nope"]) == 1
    assert capsys.readouterr().err.strip() == f"error: {raised.value}"


def test_study_explain_switched_off_writes_nothing(tmp_path: Path) -> None:
    study = _clinical_study(tmp_path, "[explain]\nenabled = false\n")
    result = study.explain(progress=False)
    assert result.models == [] and any("[explain] enabled = false" in note for note in result.notes)
    assert not (study.report_dir / "explain").exists()
