"""The measures of one model on one split, as a declarative table.

:data:`MEASURES` has one row per measure: its name (as in ``metrics.csv``), the function that computes
it, how its interval (or value) is obtained, and what it needs (a threshold, bootstrap resamples,
follow-up, risk groups). :func:`measure_split` runs the table on a :class:`SplitInputs`, with the
survival measures at the horizons and the curves of the report; a measure that cannot be computed on a
split is left out with a note."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from analytics import stats
from analytics.stats.calibrate import RECALIBRATION_UNDEFINED
from analytics.stats.roc_band import BAND_SPECIFICITIES, auc_bootstrap_band
from analytics.stats.time_curves import km_calibration_points, time_roc_curve
from analytics.validation.competing import usable_horizons
from analytics.validation.values import CALIBRATION, Estimate, LogRank, _count, _mapping, clean, jsonable, safe

log = logging.getLogger("cohortlab.validate")


@dataclass(frozen=True)
class SplitMetrics:
    """Every measure of one model on one split.

    ``estimates`` holds the measures with intervals (auc, sensitivity, f1,
    c_index, ...) in the order of :data:`MEASURES`; ``calibration`` the
    calibration summaries (None when not computed); ``logrank`` the test across
    risk groups.
    """

    n: int
    n_positive: int
    estimates: Mapping[str, Estimate] = field(default_factory=dict)
    calibration: Mapping[str, float | None] | None = None
    logrank: LogRank | None = None
    # patients with follow-up (time and event) and their events: what the survival measures use
    n_survival: int | None = None
    n_events: int | None = None

    def get(self, measure: str) -> Estimate | None:
        """The measure named as in metrics.csv (``n``, ``auc``, ``calibration_brier``, ``logrank_p`` ...), or None."""
        if measure in ("n", "n_positive"):
            return Estimate(float(getattr(self, measure)), method="count")
        if measure in ("n_survival", "n_events"):
            value = getattr(self, measure)
            return None if value is None else Estimate(float(value), method="count")
        if measure.startswith("calibration_") and measure not in self.estimates:  # pooled ones have an interval
            key = measure.removeprefix("calibration_")
            if self.calibration is None or key not in self.calibration:
                return None
            return Estimate(self.calibration[key], method=CALIBRATION.get(key, ""))
        if measure == "logrank_p":
            return None if self.logrank is None else Estimate(self.logrank.p, method="log-rank")
        return self.estimates.get(measure)

    def names(self) -> list[str]:
        """The measures present, in metrics.csv order."""
        known = [row.name for row in MEASURES]
        present = [name for name in known if self.get(name) is not None]
        extra = [k for k in self.estimates if k not in known]
        extra += [f"calibration_{k}" for k in (self.calibration or {}) if f"calibration_{k}" not in known]
        counts = ["n_survival", "n_events"] if self.n_survival is not None else []
        return ["n", "n_positive", *counts, *present, *extra]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "n_positive": self.n_positive}
        if self.n_survival is not None:
            out["n_survival"], out["n_events"] = self.n_survival, self.n_events
        out.update({k: e.to_dict() for k, e in self.estimates.items()})
        if self.calibration is not None:
            out["calibration"] = dict(self.calibration)
        if self.logrank is not None:
            out["logrank"] = self.logrank.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str, source: str) -> SplitMetrics:
        d = _mapping(d, where, source)
        estimates: dict[str, Estimate] = {}
        order = {row.name: i for i, row in enumerate(MEASURES)}
        for key in sorted((k for k, v in d.items() if isinstance(v, dict) and "estimate" in v),
                          key=lambda k: (order.get(k, len(order)), k)):
            estimates[key] = Estimate.from_dict(d[key], f"{where}.{key}", source)
        calibration = None
        if "calibration" in d:
            cal = _mapping(d["calibration"], f"{where}.calibration", source)
            keys = [k for k in CALIBRATION if k in cal] + sorted(k for k in cal if k not in CALIBRATION)
            calibration = {k: clean(cal[k]) for k in keys}
        logrank = None
        if "logrank" in d:
            lr = _mapping(d["logrank"], f"{where}.logrank", source)
            logrank = LogRank(clean(lr.get("statistic")), None if lr.get("df") is None else int(lr["df"]), clean(lr.get("p")))
        n_surv = _count(d, "n_survival", where, source) if "n_survival" in d else None
        n_events = _count(d, "n_events", where, source) if "n_events" in d else None
        return cls(_count(d, "n", where, source), _count(d, "n_positive", where, source), estimates, calibration, logrank,
                   n_surv, n_events)


Need = Literal["threshold", "bootstrap", "survival", "risk_groups", "horizons"]


@dataclass
class SplitInputs:
    """What the measures of one model on one split are computed from, and the notes they leave.

    ``threshold`` and ``cut`` are the training-chosen threshold and risk
    cut-points (None when the training predictions had one class);
    ``survival`` the follow-up of the patients who have it: time, event, score.
    """

    y: np.ndarray
    score: np.ndarray
    level: float
    n_boot: int
    seed: int
    dca_thresholds: np.ndarray
    threshold: float | None = None
    survival: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    cut: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict, repr=False)
    # survival models: absolute risk 1 - S(t|x) of the survival rows at each horizon (columns)
    horizons: tuple[float, ...] = ()
    horizon_risk: np.ndarray | None = None
    # binary models on a censored endpoint: the horizon of the label ("event by t"), at which the predicted
    # probabilities of the survival rows are evaluated with IPCW
    label_horizon: float | None = None
    # survival models: absolute risk of the survival rows on a grid of times up to the last horizon (the
    # integrated Brier score)
    grid: tuple[float, ...] = ()
    grid_risk: np.ndarray | None = None
    # competing risks: the code of the cause of interest and the status codes of the survival rows (their
    # ``survival`` event is then "the cause of interest", other causes censoring it); ``discrimination_only``:
    # a single-event model of the cause-specific hazard (C and AUC(t) only, no absolute-risk measures)
    cause: int | None = None
    status: np.ndarray | None = None
    discrimination_only: bool = False

    @classmethod
    def of(cls, y: np.ndarray, score: np.ndarray, *, level: float, n_boot: int, seed: int,
           dca_thresholds: np.ndarray, threshold: float | None = None, time: np.ndarray | None = None,
           event: np.ndarray | None = None, cut: np.ndarray | None = None,
           survival_score: np.ndarray | None = None, horizons: Sequence[float] = (),
           horizon_risk: np.ndarray | None = None, label_horizon: float | None = None,
           grid: Sequence[float] = (), grid_risk: np.ndarray | None = None, cause: int | None = None,
           discrimination_only: bool = False) -> SplitInputs:
        """Inputs of one split; follow-up is used when at least three patients have it and one has an event.

        ``time`` and ``event`` align with ``score``, or, when given, with ``survival_score``: the scores of
        every patient with follow-up, labelled or not (``horizon_risk`` and ``grid_risk`` align with these too).
        With ``cause``, ``event`` holds status codes (0 censored, otherwise the cause).
        """
        survival = None
        risk = None
        on_grid = None
        status = None
        if time is not None and event is not None:
            base = score if survival_score is None else survival_score
            ok = ~(np.isnan(time) | np.isnan(event))
            hit = event if cause is None else (event == cause).astype(np.float64)
            if ok.sum() >= 3 and hit[ok].sum() >= 1:
                survival = (time[ok], hit[ok], base[ok])
                status = None if cause is None else event[ok].astype(np.int64)
                risk = None if horizon_risk is None else np.asarray(horizon_risk)[ok]
                on_grid = None if grid_risk is None else np.asarray(grid_risk)[ok]
        return cls(y, score, level, n_boot, seed, dca_thresholds, threshold, survival, cut,
                   horizons=tuple(float(t) for t in horizons), horizon_risk=risk,
                   label_horizon=None if label_horizon is None else float(label_horizon),
                   grid=tuple(float(t) for t in grid), grid_risk=on_grid, cause=cause, status=status,
                   discrimination_only=discrimination_only)

    def has(self, need: Need) -> bool:
        if need == "threshold":
            return self.threshold is not None
        if need == "bootstrap":
            return self.n_boot > 0
        if need == "survival":
            return self.survival is not None
        if need == "horizons":
            return self.survival is not None and self.horizon_risk is not None and bool(self.horizons)
        # risk groups: Kaplan-Meier curves and the log-rank test, of a single event type only (with competing
        # causes the risk groups get Aalen-Johansen curves, analytics.validation.competing)
        return self.survival is not None and self.cut is not None and self.cause is None

    def call(self, fn: Callable[..., Any], *args: Any, key: str | None = None, note: str = "{}", **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, or None and a note (``note`` formatted with why) when it cannot be computed.

        ``key`` shares one call among the measures it gives (one note, however many measures).
        """
        if key is not None and key in self.shared:
            return self.shared[key]
        value, why = safe(fn, *args, **kwargs)
        if why is not None:
            self.notes.append(note.format(why))
        if key is not None:
            self.shared[key] = value
        return value

    def binary(self) -> dict[str, stats.Interval] | None:
        """Sensitivity ... F1 at the training threshold (one call for all six)."""
        return self.call(stats.binary_metrics, self.y, self.score, self.threshold, key="binary", level=self.level,
                         n_boot=self.n_boot, seed=self.seed)

    def auc_bootstrap(self) -> tuple[stats.Interval, np.ndarray, np.ndarray] | None:
        """The bootstrap AUC interval and the ROC band (sensitivity at :data:`BAND_SPECIFICITIES`) from the same
        stratified resamples, counted once (:func:`analytics.stats.roc_band.auc_bootstrap_band`; one call for
        both)."""
        return self.call(auc_bootstrap_band, self.y, self.score, key="auc_bootstrap", n_boot=self.n_boot,
                         level=self.level, seed=self.seed)

    def calibration(self) -> dict[str, float] | None:
        """Calibration summaries; a recalibration fit without an estimate (constant predictions, separated
        classes) leaves its intercept and slope out, with a note saying why."""
        if "calibration" in self.shared:
            return self.shared["calibration"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                value: dict[str, float] | None = stats.calibration(self.y, self.score)
            except (ValueError, ZeroDivisionError, np.linalg.LinAlgError) as exc:
                value = None
                self.notes.append(f"calibration: {exc}")
        for w in caught:
            text = str(w.message)
            if text.startswith(RECALIBRATION_UNDEFINED):
                self.notes.append(f"calibration: {text}")
            else:
                log.info("calibration: %s", text)
        self.shared["calibration"] = value
        return value

    def km(self) -> stats.KMResult | None:
        """Kaplan-Meier curves and the log-rank test of the risk groups cut at the training cut-points."""
        assert self.survival is not None and self.cut is not None
        time, event, score = self.survival
        groups = np.searchsorted(self.cut, score, side="right")
        labels = stats.survival.group_labels(len(self.cut) + 1)
        return self.call(stats.km_by_group, time, event, groups, key="km",
                         labels={i: labels[i] for i in range(len(labels))}, level=self.level)


Value = stats.Interval | Estimate | LogRank | float | None


@dataclass(frozen=True)
class MeasureRow:
    """One measure: its name (as in metrics.csv), the function that computes it from a split's inputs, how
    its interval (or value) is obtained, and what it needs beyond two classes.

    The function returns an interval (written with its bounds), a number (a
    calibration summary), a :class:`LogRank`, or None (not available here).
    """

    name: str
    compute: Callable[[SplitInputs], Value]
    ci: str
    needs: tuple[Need, ...] = ()


def _auc(d: SplitInputs) -> Value:
    iv = d.call(stats.auc_ci, d.y, d.score, method="delong", level=d.level, note="AUC without a CI ({})")
    return iv if iv is not None else Estimate(clean(stats.auc(d.y, d.score)), None, None, "no CI", clean(d.level))


def _auc_bootstrap(d: SplitInputs) -> Value:
    boot = d.auc_bootstrap()
    return None if boot is None else boot[0]


def _binary(name: str) -> Callable[[SplitInputs], Value]:
    def compute(d: SplitInputs) -> Value:
        return (d.binary() or {}).get(name)
    return compute


def _calibration(name: str) -> Callable[[SplitInputs], Value]:
    def compute(d: SplitInputs) -> Value:
        return (d.calibration() or {}).get(name)
    return compute


def _c_index(d: SplitInputs) -> Value:
    """Harrell's C with the infinitesimal-jackknife interval of R ``survival::concordance`` (O(n log n), no
    resampling: :func:`analytics.stats.concordance` with ``interval="ij"``)."""
    assert d.survival is not None
    time, event, score = d.survival
    return d.call(stats.concordance, time, event, score, level=d.level, interval="ij")


def _logrank(d: SplitInputs) -> Value:
    km = d.km()
    if km is None:
        return None
    return LogRank(clean(km.logrank["statistic"]), int(km.logrank["df"]), clean(km.logrank["p"]))


MEASURES: tuple[MeasureRow, ...] = (
    MeasureRow("auc", _auc, "delong (no CI when its variance cannot be estimated)"),
    MeasureRow("auc_bootstrap", _auc_bootstrap, "bootstrap-percentile, stratified", ("bootstrap",)),
    *(MeasureRow(k, _binary(k), "wilson", ("threshold",)) for k in ("sensitivity", "specificity", "accuracy", "ppv", "npv")),
    MeasureRow("f1", _binary("f1"), "bootstrap-percentile, stratified (none when n_boot = 0)", ("threshold",)),
    *(MeasureRow(f"calibration_{k}", _calibration(k), text) for k, text in CALIBRATION.items()),
    MeasureRow("c_index", _c_index, "ij-normal (infinitesimal jackknife, R survival::concordance)", ("survival",)),
    MeasureRow("logrank_p", _logrank, "log-rank", ("risk_groups",)),
)


def _roc_curve(d: SplitInputs) -> dict[str, Any]:
    roc = d.call(stats.roc_curve, d.y, d.score, note="ROC curve not drawn ({})")
    if roc is None:
        return {}
    return {"roc": {"fpr": (1.0 - roc.get_column("specificity")).to_list(),
                    "tpr": roc.get_column("sensitivity").to_list(),
                    "threshold": roc.get_column("threshold").to_list()}}


def _roc_band(d: SplitInputs) -> dict[str, Any]:
    """The ROC curve's pointwise bootstrap band (pROC ``ci.se``), for the report's figure."""
    boot = d.auc_bootstrap() if d.has("bootstrap") else None
    if boot is None:
        return {}
    _, low, high = boot
    return {"roc_band": {"specificity": BAND_SPECIFICITIES.tolist(), "low": low.tolist(), "high": high.tolist()}}


def _calibration_curve(d: SplitInputs) -> dict[str, Any]:
    cc = d.call(stats.calibration_curve, d.y, d.score, level=d.level, note="calibration curve not drawn ({})")
    return {} if cc is None else {"calibration": cc.as_dict()}


def _decision_curve(d: SplitInputs) -> dict[str, Any]:
    nb = d.call(stats.net_benefit, d.y, d.score, d.dca_thresholds, n_boot=min(d.n_boot, 500), level=d.level,
                seed=d.seed, note="decision curve not drawn ({})")
    return {} if nb is None else {"decision": nb.to_dict(as_series=False)}


def _km_curves(d: SplitInputs) -> dict[str, Any]:
    if not d.has("risk_groups"):
        return {}
    km = d.km()
    if km is None:
        return {}
    return {"km": km.curves.to_dict(as_series=False), "km_summary": km.summary.to_dict(as_series=False)}


def horizon_name(measure: str, t: float) -> str:
    """Name of a measure at a horizon, as in metrics.csv: ``auc_t5``, ``brier_t2.5``."""
    return f"{measure}_t{t:g}"


def _survival_model_measures(d: SplitInputs) -> dict[str, Estimate]:
    """Uno's C; AUC(t) and Brier(t) at each horizon (IPCW); ICI, E50 and E90 of the smooth calibration at
    each horizon (no interval), for a survival model's risks."""
    assert d.survival is not None and d.horizon_risk is not None
    time, event, score = d.survival
    out: dict[str, Estimate] = {}
    uno = d.call(stats.concordance, time, event, score, method="uno", level=d.level, n_boot=d.n_boot, seed=d.seed,
                 note="Uno's C not computed ({})")
    if uno is not None:
        out["c_index_uno"] = Estimate.of(uno)
    times = np.asarray(d.horizons, dtype=np.float64)
    usable = usable_horizons(d, time, "AUC(t), Brier(t) or calibration (ICI)")
    if not usable.any():
        return out
    risk = d.horizon_risk[:, usable]
    auc = d.call(stats.time_auc, time, event, risk, times[usable], level=d.level, key="time_auc",
                 note="AUC(t) not computed ({})")
    brier = d.call(stats.brier, time, event, risk, times[usable], level=d.level, key="brier_t",
                   note="Brier(t) not computed ({})")
    for j, t in enumerate(times[usable]):
        if auc is not None:
            out[horizon_name("auc", t)] = Estimate.of(auc.at(t))
        if brier is not None:
            out[horizon_name("brier", t)] = Estimate.of(brier.at(t))
        cal = d.call(stats.calibration_at, time, event, risk[:, j], t, key=f"calibration_at_{t:g}",
                     note=f"calibration at {t:g} not computed ({{}})")
        if cal is not None:
            for k in ("ici", "e50", "e90"):
                out[horizon_name(k, t)] = Estimate(clean(getattr(cal, k)), None, None,
                                                   "smooth calibration at t (Austin, Harrell & van Klaveren 2020)",
                                                   clean(d.level))
    ibs = _ibs(d)
    if ibs is not None:
        out["ibs"] = ibs
    return out


def _ibs(d: SplitInputs) -> Estimate | None:
    """Integrated Brier score of a survival model's risks on the saved grid (:func:`analytics.stats.integrated_brier`:
    IPCW, Graf et al. 1999, as riskRegression's ``ibs``), over ``[0, last grid time]``; over the grid times
    before the split's last follow-up when the grid reaches past it (the method says up to where)."""
    assert d.survival is not None
    if d.grid_risk is None or not d.grid:
        return None
    time, event, _ = d.survival
    grid = np.asarray(d.grid, dtype=np.float64)
    usable = grid < time.max()
    if not usable.any():
        d.notes.append(f"integrated Brier score not computed: the risk grid starts past the last follow-up ({time.max():g})")
        return None
    if not usable.all():
        d.notes.append(f"integrated Brier score over [0, {grid[usable][-1]:g}] only: the risk grid reaches past the "
                       f"last follow-up ({time.max():g})")
    value = d.call(stats.integrated_brier, time, event, d.grid_risk[:, usable], grid[usable],
                   note="integrated Brier score not computed ({})")
    if value is None:
        return None
    return Estimate(clean(value), None, None,
                    f"IPCW integrated Brier score over [0, {grid[usable][-1]:g}], step integral on "
                    f"{int(usable.sum())} grid times (Graf 1999; riskRegression ibs)", clean(d.level))


def ipcw_name(measure: str, t: float) -> str:
    """Name of a binary model's IPCW measure at its label's horizon, as in metrics.csv: ``auc_ipcw_t5``."""
    return f"{measure}_ipcw_t{t:g}"


def _ipcw_label_measures(d: SplitInputs) -> dict[str, Estimate]:
    """A binary model on a censored endpoint, evaluated at its label's horizon ``t`` on every patient with
    follow-up: the predicted probability is read as the risk of an event by ``t``; AUC(t) (cumulative/dynamic,
    IPCW; Uno et al. 2007, Hung & Chiang 2010) and Brier(t) (IPCW, Graf et al. 1999), as
    :func:`analytics.stats.time_auc` and :func:`analytics.stats.brier`. Patients censored before ``t`` count
    through the censoring weights instead of being dropped (complete cases)."""
    assert d.survival is not None and d.label_horizon is not None
    time, event, prob = d.survival
    t = d.label_horizon
    if t >= time.max():
        d.notes.append(f"label horizon {t:g} at or past the last follow-up ({time.max():g}): no IPCW AUC(t) or Brier(t)")
        return {}
    where = f"every patient with follow-up, {len(time)} ({int(event.sum())} events)"
    out: dict[str, Estimate] = {}
    estimators = (("auc", "AUC", stats.time_auc, "cumulative/dynamic AUC(t) (Uno 2007, Hung & Chiang 2010)"),
                  ("brier", "Brier", stats.brier, "Brier(t) (Graf 1999)"))
    for measure, label, fn, method in estimators:
        res = d.call(fn, time, event, prob, [t], level=d.level, note=f"IPCW {label} at {t:g} not computed ({{}})")
        if res is not None:
            iv = res.at(t)
            out[ipcw_name(measure, t)] = Estimate(clean(iv.estimate), clean(iv.low), clean(iv.high),
                                                 f"IPCW at t={t:g} on {where}; {method}, influence-function CI",
                                                 clean(d.level))
    return out


def _horizon_curves(d: SplitInputs) -> dict[str, Any]:
    """Per horizon: the time-dependent ROC curve (cases: event by t; controls: event-free past t; IPCW)
    and the observed (Kaplan-Meier) vs predicted risk by tenth of predicted risk."""
    assert d.survival is not None and d.horizon_risk is not None
    time, event, _ = d.survival
    out: dict[str, Any] = {}
    for j, t in enumerate(d.horizons):
        if t >= time.max():
            continue
        r = d.horizon_risk[:, j]
        roc = d.call(time_roc_curve, time, event, r, t, note=f"time-dependent ROC at {t:g} not drawn ({{}})")
        cal = d.call(km_calibration_points, time, event, r, t, note=f"calibration at {t:g} not drawn ({{}})")
        smooth = d.shared.get(f"calibration_at_{t:g}")
        out[f"t{t:g}"] = {"horizon": float(t), "time_roc": roc, "calibration_at": cal,
                          "calibration_smooth": None if smooth is None else smooth.curve.to_dict(as_series=False)}
    result: dict[str, Any] = {"horizons": out} if out else {}
    main = d.horizons[0]
    if main < time.max():  # decision curve at the main (first) horizon
        nb = d.call(stats.net_benefit_survival, time, event, d.horizon_risk[:, 0], main, d.dca_thresholds,
                    note=f"decision curve at {main:g} not drawn ({{}})")
        if nb is not None:
            result["decision_at"] = {"horizon": float(main), **nb.to_dict(as_series=False)}
    return result


# the curves of one split for the report's figures (a failure leaves a note, as a measure's does)
CURVES: tuple[Callable[[SplitInputs], dict[str, Any]], ...] = (_roc_curve, _roc_band, _calibration_curve, _decision_curve,
                                                               _km_curves)


def measure_split(d: SplitInputs) -> tuple[SplitMetrics, dict[str, Any]]:
    """Every measure of :data:`MEASURES` that applies to the split, and its curves; notes go to ``d.notes``.

    Survival measures use every patient with follow-up (``d.survival``), labelled or not; with fewer than
    two label classes only they are computed.
    """
    n, k = int(len(d.y)), int(d.y.sum())
    n_surv = None if d.survival is None else int(len(d.survival[0]))
    n_events = None if d.survival is None else int(np.sum(d.survival[1]))
    two_classes = len(np.unique(d.y)) >= 2
    if not two_classes and len(d.y):  # no labels at all (a survival model): nothing binary to note
        d.notes.append("only one class: AUC, calibration and thresholds metrics not computed")
        if d.survival is None:
            return SplitMetrics(n, k), {}
    estimates: dict[str, Estimate] = {}
    calibration: dict[str, float | None] = {}
    logrank: LogRank | None = None
    for row in MEASURES:
        if not all(d.has(need) for need in row.needs):
            continue
        if not two_classes and not ({"survival", "risk_groups"} & set(row.needs)):
            continue
        value = row.compute(d)
        if value is None:
            continue
        if isinstance(value, LogRank):
            logrank = value
        elif isinstance(value, stats.Interval):
            estimates[row.name] = Estimate.of(value)
        elif isinstance(value, Estimate):
            estimates[row.name] = value
        else:
            calibration[row.name.removeprefix("calibration_")] = clean(value)
    if d.has("horizons") and d.cause is not None:  # competing causes: the cumulative incidence of the cause
        from analytics.validation.competing import competing_measures

        estimates.update(competing_measures(d))
    elif d.has("horizons"):
        estimates.update(_survival_model_measures(d))
    if d.survival is not None and d.label_horizon is not None and d.horizon_risk is None:
        estimates.update(_ipcw_label_measures(d))
    curves: dict[str, Any] = {}
    for draw in CURVES:
        if two_classes or draw is _km_curves:
            curves.update(draw(d))
    if d.has("horizons") and d.cause is not None:
        from analytics.validation.competing import competing_curves

        curves.update(competing_curves(d))
    elif d.has("horizons"):
        curves.update(_horizon_curves(d))
    return (SplitMetrics(n, k, estimates, calibration or None, logrank, n_surv, n_events),
            jsonable(curves))
