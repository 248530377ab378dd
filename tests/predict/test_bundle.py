"""``cohortlab export`` and ``cohortlab predict --bundle``: a bundle scores new patients as the study does, without
it; its model card holds the model; a bundle changed in any way is refused before anything in it is read."""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path

import polars as pl
import pytest
from predict_helpers import KINDS, new_patients

import cohortlab
from analytics.cli import main
from analytics.export.bundle import MANIFEST, BundleError, read_bundle


def _export(study: cohortlab.Study, name: str, out: Path) -> Path:
    assert main(["export", str(study.root / "study.toml"), "--model", name, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def glm_bundle(study: cohortlab.Study, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(study, "glm", tmp_path_factory.mktemp("bundle") / "glm.cohortlab")


@pytest.mark.parametrize("name", KINDS)
def test_a_bundle_predicts_as_the_study_does(study: cohortlab.Study, tmp_path: Path, name: str) -> None:
    bundle = _export(study, name, tmp_path / f"{name}.cohortlab")
    src = tmp_path / "new.csv"
    new_patients().write_csv(src)
    away = tmp_path / "away"
    away.mkdir()
    out = away / "risks.csv"
    assert main(["predict", "--bundle", str(bundle), "--patients", str(src), "--out", str(out)]) == 0
    in_study = study.model(name).predict(new_patients())
    from_bundle = pl.read_csv(out, schema_overrides=in_study.schema)
    assert from_bundle.columns == in_study.columns
    assert from_bundle.equals(in_study.with_columns(pl.col(pl.Float64).cast(pl.Float64)))


def test_the_model_card_holds_the_full_model(glm_bundle: Path, study: cohortlab.Study) -> None:
    card = read_bundle(glm_bundle).parts["model_card.md"].decode("utf-8")
    coefs = study.model("glm").summary
    for term in coefs["term"].to_list():
        assert f"| {term} |" in card
    assert "## Intended use and population" in card and "to be completed" in card
    assert "| external |" in card and "Validated externally only in centre(s): B" in card
    assert "| internal | auc |" in card


def test_export_is_byte_identical_for_the_same_model(study: cohortlab.Study, glm_bundle: Path, tmp_path: Path) -> None:
    again = _export(study, "glm", tmp_path / "again.cohortlab")
    assert again.read_bytes() == glm_bundle.read_bytes()


def _rewrite(src: Path, dst: Path, change: dict[str, bytes | None], manifest: bool = False) -> Path:
    """A copy of bundle ``src`` with parts replaced (None: removed) or added; ``manifest``: its hashes updated."""
    with zipfile.ZipFile(src) as zf:
        parts = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    for name, data in change.items():
        if data is None:
            parts.pop(name, None)
        else:
            parts[name] = data
    if manifest:
        record = json.loads(parts[MANIFEST])
        record["files"] = {k: hashlib.sha256(v).hexdigest() for k, v in parts.items() if k != MANIFEST}
        parts[MANIFEST] = json.dumps(record).encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    return dst


def _flip(data: bytes, at: int = 100) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]


def test_a_tampered_bundle_is_refused_naming_the_part(glm_bundle: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with zipfile.ZipFile(glm_bundle) as zf:
        skops = zf.read("models/glm/model.skops")
        manifest = zf.read(MANIFEST)
    at = manifest.index(b'"models/glm/model.skops": "') + len('"models/glm/model.skops": "')  # its sha256
    attacks = {
        "changed byte": (_rewrite(glm_bundle, tmp_path / "a.zip", {"models/glm/model.skops": _flip(skops)}),
                         "'models/glm/model.skops': its sha256 differs"),
        "added file": (_rewrite(glm_bundle, tmp_path / "b.zip", {"models/glm/extra.json": b"{}"}),
                       "'models/glm/extra.json' is not listed"),
        "removed file": (_rewrite(glm_bundle, tmp_path / "c.zip", {"development.json": None}),
                         "'development.json' listed in MANIFEST.json is missing"),
        "zip slip": (_rewrite(glm_bundle, tmp_path / "d.zip", {"../../evil.sql": b"select 1"}, manifest=True),
                     "'../../evil.sql' is not a plain relative name"),
        "absolute name": (_rewrite(glm_bundle, tmp_path / "e.zip", {"/tmp/evil.json": b"{}"}, manifest=True),
                          "'/tmp/evil.json' is not a plain relative name"),
        "pickle": (_rewrite(glm_bundle, tmp_path / "f.zip",
                            {"models/glm/model.skops": pickle.dumps({"a": 1}, protocol=4)}, manifest=True),
                   "'models/glm/model.skops' is a pickle"),
        "pickle by name": (_rewrite(glm_bundle, tmp_path / "g.zip", {"models/glm/model.pkl": b"x"}, manifest=True),
                           "'models/glm/model.pkl' is of a kind a bundle never holds"),
        "changed manifest": (_rewrite(glm_bundle, tmp_path / "h.zip", {MANIFEST: _flip(manifest, at)}),
                             "its sha256 differs from the one in MANIFEST.json"),
        "not a zip": (tmp_path / "i.zip", "not a cohortlab bundle"),
    }
    (tmp_path / "i.zip").write_bytes(b"PK not really")
    src = tmp_path / "new.csv"
    new_patients().write_csv(src)
    for what, (bundle, message) in attacks.items():
        with pytest.raises(BundleError, match=None) as caught:
            read_bundle(bundle)
        assert message in str(caught.value), (what, str(caught.value))
        out = tmp_path / f"risks-{bundle.stem}.csv"
        assert main(["predict", "--bundle", str(bundle), "--patients", str(src), "--out", str(out)]) == 1, what
        err = [line for line in capsys.readouterr().err.splitlines() if line]
        assert len(err) == 1 and err[0].startswith("error:"), (what, err)
        assert not out.exists(), what
    assert not (tmp_path.parent / "evil.sql").exists() and not Path("/tmp/evil.json").exists()
