"""A fitted model in a notebook: ``study.model(name)``, its record and its coefficient tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from analytics.models.persist import PersistError

if TYPE_CHECKING:
    import polars as pl

    from analytics.models.artifacts import FitRecord
    from analytics.models.coefficients import RegressionTables
    from pipeline.config import StudyConfig


class Model:
    """One fitted model of a study, read from its folder (every file checked against the store).

    Attributes
    ----------
    name, kind
        The model and its kind.
    record
        Its fit record (``models/<name>/manifest.json``, typed).
    path
        Its folder.
    """

    def __init__(self, study: StudyConfig, name: str) -> None:
        from analytics.models.artifacts import FitRecord
        from analytics.models.coefficients import RegressionTables
        from analytics.models.persist import MANIFEST, read_files
        from analytics.models.updated import with_updated

        study = with_updated(study, name)  # a model updated for a centre (models/<model>-updated-<centre>)
        if name not in {m.name for m in study.models}:
            known = ", ".join(m.name for m in study.models) or "none"
            raise PersistError(f"no model named {name!r} in study.toml (models: {known})")
        self.name, self.path = name, study.models_dir / name
        self._study = study
        files = read_files(self.path, study.store_path)
        if not files or MANIFEST not in files:
            raise PersistError(f"model {name!r} is not fitted yet ({self.path}): run `cohortlab fit` or study.fit()")
        self.record: FitRecord = FitRecord.from_json(files[MANIFEST], self.path / MANIFEST)
        self.kind = self.record.kind
        self._tables = RegressionTables.from_files(self.record.regression or {}, files)

    def __repr__(self) -> str:
        return f"<cohortlab.Model {self.name!r} ({self.kind}) at {self.path}>"

    def _regression(self) -> RegressionTables:
        if self._tables is None:
            why = ("its inputs include image features (no per-unit coefficients)" if self.record.features else
                   "not a regression model (logistic or cox)")
            raise PersistError(f"model {self.name!r} ({self.kind}) has no coefficient table: {why}")
        return self._tables

    @property
    def summary(self) -> pl.DataFrame:
        """The coefficient table (``models/<name>/coefficients.csv``): ``term, estimate, se, odds_ratio`` (or
        ``hazard_ratio``), ``ci_low, ci_high, z, p, penalised, note``, on the inputs' original scale, as R's
        ``summary(glm)`` / ``summary(coxph)``; a penalised model's rows have no se, CI, z or p. A model fitted
        with ``[imputation] method = "mice"``: the pooled table (Rubin's rules, as ``mice::pool``: ``se`` is
        ``sqrt(t)``, the interval Rubin's t interval; with ``m, ubar, b, t, dfcom, df, riv, lambda, fmi``), or
        for a penalised regression the mean of the imputations' estimates, flagged."""
        return self._regression().coefficients

    @property
    def anova(self) -> pl.DataFrame | None:
        """Wald χ² tests per term in the layout of ``rms::anova`` (``row, chisq, df, p``); None when penalised."""
        return self._regression().anova

    @property
    def statistics(self) -> dict[str, Any]:
        """The model line: n, events and (unpenalised) the likelihood-ratio χ², its df and p, AIC."""
        return dict(self._regression().summary)

    def summary_text(self) -> str:
        """What :meth:`print_summary` prints."""
        return self._regression().text(self.name, self.kind)

    def predict(self, patients: pl.DataFrame, explain: int = 0, *, slides: str | Path | None = None,
                scans: str | Path | None = None, device: str = "auto") -> pl.DataFrame:
        """Risks of new patients (``cohortlab predict``; :func:`analytics.predict.predict_frame`).

        ``patients``: ``patient_id``, optionally ``center``, and the model's predictors, as text or typed. One row
        per patient, in order: ``patient_id, lp, risk, risk_lower, risk_upper`` (survival: and ``risk_<t>``,
        ``risk_lower_<t>``, ``risk_upper_<t>`` per horizon), ``group, flags``, with ``explain`` > 0 its largest SHAP contributions (``explain``), and
        ``reason`` (why a patient was not scored; the others are). A model that reads image features embeds the
        new patients' ``slides`` or ``scans`` (CSV manifests as ``cohortlab ingest`` reads them) on ``device``.
        """
        from analytics.predict import predict_frame
        from analytics.predict.images import ImageFiles

        images = ImageFiles(None if slides is None else Path(slides), None if scans is None else Path(scans), device)
        return predict_frame(self._study, self.name, patients, explain=explain, images=images)

    def print_summary(self) -> None:
        """Print the model's facts, coefficient table and per-term Wald tests, laid out as lifelines'
        ``print_summary``."""
        print(self.summary_text())



__all__ = ["Model"]
