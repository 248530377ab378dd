"""``cohortlab export --calculator``: the offline page, driven in headless Chromium on 50 development patients,
gives the model's own risks to 1e-9 (a Cox model's at every horizon) and shows an out-of-range value as extrapolation."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from predict_helpers import new_patients

import cohortlab
from analytics.cli import main

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs headless Chromium")

# typed into the page's inputs one patient after another; the page's own result is read back
DRIVER = """<script>
(function () {
  const rows = __ROWS__, out = [];
  for (const row of rows) {
    for (const [k, v] of Object.entries(row)) {
      const el = document.getElementById("in-" + k);
      el.value = v;
      el.dispatchEvent(new Event("input"));
    }
    const r = document.getElementById("result");
    const at = {};
    for (const li of document.querySelectorAll("#horizons li"))
      at[li.dataset.horizon] = {risk: li.dataset.risk, lower: li.dataset.lower, upper: li.dataset.upper};
    out.push({risk: r.dataset.risk, lower: r.dataset.lower, upper: r.dataset.upper,
              extrapolation: r.dataset.extrapolation, text: r.textContent, at: at});
  }
  const pre = document.createElement("pre");
  pre.id = "driver-out";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script></body>"""


def _drive(page: Path, rows: list[dict[str, str]], tmp: Path) -> list[dict[str, str]]:
    text = page.read_text(encoding="utf-8")
    driven = tmp / f"driven-{page.name}"
    driven.write_text(text.replace("</body>", DRIVER.replace("__ROWS__", json.dumps(rows)), 1), encoding="utf-8")
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          driven.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    start = dom.index('<pre id="driver-out">') + len('<pre id="driver-out">')
    return json.loads(dom[start:dom.index("</pre>", start)].replace("&quot;", '"').replace("&amp;", "&"))


@pytest.mark.parametrize("name", ["glm", "cox", "published"])
def test_the_calculator_gives_the_models_risks_in_chromium(study: cohortlab.Study, tmp_path: Path,
                                                           name: str) -> None:
    page = tmp_path / f"{name}.html"
    assert main(["export", str(study.root / "study.toml"), "--model", name, "--calculator", "--out", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text  # nothing is fetched
    assert ('<img alt="nomogram" src="data:image/png;base64,' in text) == (name != "published")
    patients = new_patients().head(50)
    rows = patients.select("age", "sex", "grade").to_dicts()
    got = _drive(page, rows, tmp_path)
    want = study.model(name).predict(patients)
    risk = want["risk_50" if name == "cox" else "risk"].to_numpy()
    np.testing.assert_allclose([float(g["risk"]) for g in got], risk, rtol=0, atol=1e-9)
    if name in ("glm", "cox"):  # the interval of an unpenalised regression (Wald; survfit's)
        np.testing.assert_allclose([float(g["lower"]) for g in got], want["risk_lower"].to_numpy(), rtol=0, atol=1e-9)
        np.testing.assert_allclose([float(g["upper"]) for g in got], want["risk_upper"].to_numpy(), rtol=0, atol=1e-9)
    if name == "cox":  # and at every horizon of the model
        assert all(sorted(g["at"]) == ["50", "80"] for g in got)
        for t in ("50", "80"):
            for part, key in (("", "risk"), ("_lower", "lower"), ("_upper", "upper")):
                np.testing.assert_allclose([float(g["at"][t][key]) for g in got], want[f"risk{part}_{t}"].to_numpy(),
                                           rtol=0, atol=1e-9, err_msg=f"{key} at {t}")
    else:
        assert all(g["at"] == {} for g in got)
    flagged = {p for p, f in zip(want["patient_id"].to_list(), want["flags"].to_list()) if f and "extrapolation" in f}
    assert {p for p, g in zip(patients["patient_id"].to_list(), got) if g["extrapolation"] == "true"} == flagged


def test_an_out_of_range_value_is_shown_as_extrapolation(study: cohortlab.Study, tmp_path: Path) -> None:
    page = tmp_path / "glm.html"
    assert main(["export", str(study.root / "study.toml"), "--model", "glm", "--calculator", "--out", str(page)]) == 0
    got = _drive(page, [{"age": "150", "sex": "F", "grade": "low"}, {"age": "60", "sex": "F", "grade": "low"}],
                 tmp_path)
    assert got[0]["extrapolation"] == "true" and got[0]["text"].endswith("(extrapolation)")
    assert got[1]["extrapolation"] == "false" and "extrapolation" not in got[1]["text"]
    want = study.model("glm").predict(pl.DataFrame({"patient_id": ["X"], "age": ["150"], "sex": ["F"],
                                                    "grade": ["low"]}))
    assert float(got[0]["risk"]) == pytest.approx(want["risk"][0], abs=1e-9)


def test_a_model_the_calculator_cannot_hold_is_refused(study: cohortlab.Study, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "svm.html"
    assert main(["export", str(study.root / "study.toml"), "--model", "svm", "--calculator", "--out", str(page)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 1 and "logistic, cox, fixed" in err[0]
    assert not page.exists()
