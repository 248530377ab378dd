"""Which pairs of maximum-likelihood models the likelihood-ratio test of added value compares: nesting of
their model matrices term by term, including models with a formula beside models of scores only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from analytics.validation import stage


def _spec(name: str, formula: str | None = None, clinical: tuple[str, ...] = (),
          scores: tuple[str, ...] = ()) -> SimpleNamespace:
    return SimpleNamespace(name=name, formula=formula, clinical=list(clinical), scores=list(scores), features=[])


@pytest.fixture
def study(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    import analytics.models.artifacts as artifacts

    monkeypatch.setattr(artifacts, "ml_regression_reason", lambda spec: None)  # all maximum likelihood here
    return SimpleNamespace(models=[
        _spec("scores", scores=("a",)), _spec("spline", formula="histol + rcs(age, 4)"),
        _spec("linear", clinical=("histol", "age")), _spec("fusion", formula="histol", scores=("a",)),
    ])


@pytest.mark.parametrize("new, old, reason", [
    ("spline", "linear", None),  # age lies in the span of its spline
    ("linear", "spline", "the inputs are not nested: spline has terms ['rcs(age, 4)'] that linear lacks"),
    ("fusion", "scores", None),  # a model of scores only, nested in one that adds a clinical term
    ("scores", "fusion", "the inputs are not nested: fusion has terms ['histol'] that scores lacks"),
    ("spline", "scores", "the inputs are not nested: scores has scores ['a'] that spline lacks"),
    ("spline", "spline", "spline and spline have the same inputs"),
])
def test_nesting_by_terms(study: SimpleNamespace, new: str, old: str, reason: str | None) -> None:
    assert stage.lr_test_reason(study, new, old) == reason  # type: ignore[arg-type]
