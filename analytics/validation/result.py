"""The typed result of validation, :class:`Validation`: every measure of every model and split with its
interval, comparisons, subgroups, added value and curves; written as and read back from ``metrics.json``,
``metrics.csv`` and ``curves.json``."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import polars as pl

from analytics import stats
from analytics.splits import SPLITS
from analytics.validation.internal import InternalMetrics
from analytics.validation.measures import SplitMetrics
from analytics.validation.multicentre import ModelMulticentre
from analytics.validation.records import (
    AddedValue,
    CenterMetrics,
    Cutpoints,
    ModelMetrics,
    PairedComparison,
    Threshold,
    paired_comparisons,
)
from analytics.validation.subgroups import SubgroupMetrics
from analytics.validation.values import (
    THRESHOLD_CHOSEN_ON,
    Estimate,
    ValidateError,
    _count,
    _mapping,
    _read,
    _required,
    clean,
    fmt_number,
)

# the summary's columns: the seven of every measure, then the level of its interval, the centre of a
# per-centre row, and a comparison's z and p (a log-rank row's p too); the cause of interest with competing causes
# (empty for a single event type); a measure pooled over imputations: their number m and its fraction of missing
# information (fmi, Rubin's rules only)
SUMMARY_COLUMNS = ("model", "split", "measure", "estimate", "low", "high", "method", "level", "center", "z", "p",
                   "cause", "m", "fmi")


SUMMARY_SCHEMA = {"model": pl.String, "split": pl.String, "measure": pl.String, "estimate": pl.Float64,
                  "low": pl.Float64, "high": pl.Float64, "method": pl.String, "level": pl.Float64,
                  "center": pl.String, "z": pl.Float64, "p": pl.Float64, "cause": pl.String, "m": pl.Int64,
                  "fmi": pl.Float64}


# metrics.csv: the summary's rows under these columns ("metric" is the summary's "measure"); m and fmi follow
# only when a measure was pooled over imputations (a study without imputation writes the file as before)
CSV_COLUMNS = ("model", "split", "center", "metric", "estimate", "low", "high", "z", "p", "method", "cause")
POOLED_COLUMNS = ("m", "fmi")


@dataclass(frozen=True)
class Validation:
    """Validated metrics of a study's models: typed values per model and split, comparisons, curves.

    Attributes
    ----------
    study, cohort, cohort_hash
        What was validated.
    inputs_digest, code_version, settings
        What the metrics depend on (predictions, outcomes, ``[validation]``
        settings and seed) and the code that computed them.
    models
        :class:`ModelMetrics` by model name, in study order.
    comparisons
        Stored paired DeLong comparisons (the configured pairs, else all).
    notes
        What could not be computed, and why.
    subgroups
        :class:`SubgroupMetrics` of every model per split and subgroup of the
        ``[validation] subgroups`` columns (metrics.json ``"subgroups"``).
    added_value
        :class:`AddedValue` of each ``[validation] added_value`` pair per split
        (metrics.json ``"added_value"``).
    internal
        :class:`~analytics.validation.internal.InternalMetrics` by model: the
        optimism-corrected internal validation of the models fitted with
        ``[validation] internal`` (metrics.json ``"internal"``, written only when
        there is one; summary rows of split ``train`` whose method starts with
        its label, e.g. ``optimism-bootstrap B=200: corrected``).
    curves
        ROC, calibration, decision and Kaplan-Meier curves: model -> split ->
        kind -> data (as ``curves.json``); :meth:`curve` gives one as a frame.
    predictions, outcomes
        The scores (model, patient_id, split, score) and labels (patient_id,
        label) the metrics come from, when known: :meth:`compare` computes a
        comparison that was not stored from them.
    """

    study: str
    cohort: str | None
    cohort_hash: str | None
    inputs_digest: str | None
    code_version: str | None
    settings: Mapping[str, Any]
    models: Mapping[str, ModelMetrics]
    comparisons: tuple[PairedComparison, ...] = ()
    notes: tuple[str, ...] = ()
    subgroups: tuple[SubgroupMetrics, ...] = ()
    curves: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    predictions: pl.DataFrame | None = field(default=None, compare=False, repr=False)
    outcomes: pl.DataFrame | None = field(default=None, compare=False, repr=False)
    added_value: tuple[AddedValue, ...] = ()
    internal: Mapping[str, InternalMetrics] = field(default_factory=dict)
    # by model: per-centre measures, their meta-analysis and updated models (analytics.validation.multicentre)
    multicentre: Mapping[str, ModelMulticentre] = field(default_factory=dict)
    # competing causes: the label of the cause of interest every measure is of (None: a single event type)
    cause: str | None = None

    def __repr__(self) -> str:
        splits = [s for s in SPLITS if any(s in m.splits for m in self.models.values())]
        return (f"<Validation of {self.study!r}, cohort {self.cohort!r}: {len(self.models)} models, splits "
                f"{', '.join(splits)}; {len(self.comparisons)} comparisons, {len(self.notes)} notes>")

    @property
    def level(self) -> float:
        """Confidence level of the intervals."""
        return float(self.settings.get("level", 0.95))

    def get(self, model: str, split: str, measure: str) -> Estimate | None:
        """One measure of one model on one split (names as in metrics.csv), or None when absent."""
        m = self.models.get(model)
        sm = m.splits.get(split) if m is not None else None
        return sm.get(measure) if sm is not None else None

    # --- the long table -------------------------------------------------------------------------------

    def rows(self) -> Iterator[dict[str, Any]]:
        """One dict per summary row: per model, its splits' measures, its threshold, its per-centre rows;
        then the comparisons."""
        def row(model: str, split: str, measure: str, e: Estimate, center: str | None = None,
                z: float | None = None, p: float | None = None) -> dict[str, Any]:
            return {"model": model, "split": split, "measure": measure, "estimate": e.estimate, "low": e.low,
                    "high": e.high, "method": e.method, "level": e.level, "center": center, "z": z, "p": p,
                    "cause": self.cause, "m": e.m, "fmi": e.fmi}

        for model, m in self.models.items():
            for split, sm in m.splits.items():
                for name in sm.names():
                    e = sm.get(name)
                    assert e is not None
                    yield row(model, split, name, e, p=e.estimate if name == "logrank_p" else None)
            if m.threshold is not None:
                yield row(model, "train", "threshold", Estimate(m.threshold.value, method=m.threshold.rule))
            for center, per_split in m.centers.items():
                for split, cm in per_split.items():
                    yield row(model, split, "n", Estimate(float(cm.n), method="count"), center=center)
                    yield row(model, split, "n_positive", Estimate(float(cm.n_positive), method="count"), center=center)
                    if cm.auc is not None:
                        yield row(model, split, "auc", cm.auc, center=center)
                    if cm.c_index is not None:
                        yield row(model, split, "c_index", cm.c_index, center=center)
            if model in self.internal:  # internal validation of the training split: apparent, optimism, corrected
                for name, e in self.internal[model].summary_rows():
                    yield row(model, "train", name, e)
            # per external centre, pooled (split "meta"), updated (split "updating"); IECV's per left-out centre
            # (split "iecv") and pooled (split "meta_iecv")
            for mc in (x for x in self.multicentre.values() if x.model == model):
                for mname, msplit, measure, est, where in mc.rows():
                    yield row(mname, msplit, measure, est, center=where)
        for c in self.comparisons:
            yield row(f"{c.a} vs {c.b}", c.split, "auc_difference",
                      Estimate(c.difference, c.low, c.high, "delong", c.level), z=c.z, p=c.p)
        compared = {(c.a, c.b, c.split) for c in self.comparisons}
        for av in self.added_value:
            diff = av.auc_difference
            if diff is not None and (diff.a, diff.b, diff.split) not in compared:
                yield row(f"{diff.a} vs {diff.b}", diff.split, "auc_difference",
                          Estimate(diff.difference, diff.low, diff.high, "delong", diff.level), z=diff.z, p=diff.p)
            for name, e, z, p in av.rows():
                yield row(f"{av.new} vs {av.old}", av.split, name, e, z=z, p=p)

    @cached_property
    def summary(self) -> pl.DataFrame:
        """Every measure as one row: model, split, measure, estimate, low, high, method; then level (of
        the interval), center (per-centre rows; else null), z and p (comparisons, whose model is
        ``"a vs b"`` and measure ``auc_difference``; a log-rank row's p). Counts (``n``,
        ``n_positive``) are rows too, with method "count". A measure pooled over multiply imputed data has ``m``
        (the number of imputations) and, pooled by Rubin's rules, ``fmi`` (its fraction of missing information);
        both are null elsewhere."""
        return pl.DataFrame(list(self.rows()), schema=SUMMARY_SCHEMA, orient="row")

    # --- files --------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """metrics.json's content."""
        return {
            "study": self.study, "cohort": self.cohort, "cohort_hash": self.cohort_hash,
            "inputs_digest": self.inputs_digest, "code_version": self.code_version,
            "settings": dict(self.settings),
            "models": {name: m.to_dict() for name, m in self.models.items()},
            "comparisons": [c.to_dict() for c in self.comparisons],
            "notes": list(self.notes),
            "subgroups": [g.to_dict() for g in self.subgroups],
            "added_value": [a.to_dict() for a in self.added_value],
            # only when a model has one: a study without internal validation writes the file as before
            **({"internal": {name: m.to_dict() for name, m in self.internal.items()}} if self.internal else {}),
            **({"multicentre": {name: m.to_dict() for name, m in self.multicentre.items()}} if self.multicentre else {}),
            "cause": self.cause,
        }

    def to_csv(self) -> str:
        """metrics.csv's text: the summary's rows; every float written in full (the shortest text that reads
        back as the same float)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        rows = list(self.rows())
        columns = CSV_COLUMNS + (POOLED_COLUMNS if any(r["m"] is not None for r in rows) else ())
        writer.writerow(columns)
        numeric = {c for c, t in SUMMARY_SCHEMA.items() if t == pl.Float64}
        for r in rows:
            r = {**r, "metric": r["measure"]}
            writer.writerow(["" if r[c] is None else repr(float(r[c])) if c in numeric else r[c] for c in columns])
        return buf.getvalue()

    @classmethod
    def from_dict(cls, data: Any, source: str = "metrics.json", *, order: Sequence[str] | None = None,
                  curves: Mapping[str, Any] | None = None, predictions: pl.DataFrame | None = None,
                  outcomes: pl.DataFrame | None = None) -> Validation:
        """The object of a parsed metrics.json; models in ``order`` first (the study's), the rest sorted.

        Raises
        ------
        ValidateError
            A required key is missing or of the wrong type (the message names ``source`` and the key).
        """
        data = _mapping(data, "", source)
        raw_models = _mapping(_required(data, "models", "", source), "models", source)
        names = [n for n in (order or []) if n in raw_models] + sorted(n for n in raw_models if n not in (order or []))
        models = {}
        for name in names:
            where = f"models.{name}"
            m = _mapping(raw_models[name], where, source)
            splits_raw = _mapping(_required(m, "splits", where, source), f"{where}.splits", source)
            splits = {s: SplitMetrics.from_dict(splits_raw[s], f"{where}.splits.{s}", source)
                      for s in [*SPLITS, *sorted(k for k in splits_raw if k not in SPLITS)] if s in splits_raw}
            centers = {}
            for center, per in sorted(_mapping(m.get("centers", {}), f"{where}.centers", source).items()):
                per = _mapping(per, f"{where}.centers.{center}", source)
                centers[center] = {
                    s: CenterMetrics(_count(per[s], "n", f"{where}.centers.{center}.{s}", source),
                                     _count(per[s], "n_positive", f"{where}.centers.{center}.{s}", source),
                                     Estimate.from_dict(per[s]["auc"], f"{where}.centers.{center}.{s}.auc", source)
                                     if "auc" in per[s] else None,
                                     Estimate.from_dict(per[s]["c_index"], f"{where}.centers.{center}.{s}.c_index",
                                                        source) if "c_index" in per[s] else None)
                    for s in SPLITS if s in per}
            threshold = None
            if "threshold" in m:
                t = _mapping(m["threshold"], f"{where}.threshold", source)
                threshold = Threshold(clean(t.get("value")), str(t.get("rule", "")), str(t.get("chosen_on", "")))
            cut = None
            if "risk_cutpoints" in m:
                rc = _mapping(m["risk_cutpoints"], f"{where}.risk_cutpoints", source)
                cut = Cutpoints(tuple(clean(q) for q in rc.get("quantiles", [])), tuple(clean(x) for x in rc.get("values", [])))
            models[name] = ModelMetrics(splits, centers, threshold, cut)
        comparisons = []
        for i, c in enumerate(data.get("comparisons", [])):
            c = _mapping(c, f"comparisons[{i}]", source)
            for key in ("a", "b", "split"):
                _required(c, key, f"comparisons[{i}]", source)
            comparisons.append(PairedComparison.from_dict(c, c["a"], c["b"], c["split"]))
        subgroups = tuple(SubgroupMetrics.from_dict(g, f"subgroups[{i}]", source)
                          for i, g in enumerate(data.get("subgroups") or []))
        added_value = tuple(AddedValue.from_dict(a, f"added_value[{i}]", source)
                            for i, a in enumerate(data.get("added_value") or []))
        raw_internal = _mapping(data.get("internal") or {}, "internal", source)
        internal = {name: InternalMetrics.from_dict(raw_internal[name], f"internal.{name}", source)
                    for name in [*(n for n in names if n in raw_internal), *sorted(n for n in raw_internal if n not in names)]}
        raw_multi = _mapping(data.get("multicentre") or {}, "multicentre", source)
        multicentre = {key: ModelMulticentre.from_dict(key, raw_multi[key], f"multicentre.{key}", source)
                       for key in sorted(raw_multi)}
        return cls(str(data.get("study", "")), data.get("cohort"), data.get("cohort_hash"), data.get("inputs_digest"),
                   data.get("code_version"), dict(data.get("settings") or {}), models, tuple(comparisons),
                   tuple(str(n) for n in data.get("notes", [])), subgroups, dict(curves or {}), predictions, outcomes,
                   added_value, internal, multicentre,
                   None if data.get("cause") is None else str(data["cause"]))

    def of_cause(self, cause: str | None) -> Validation:
        """The measures of ``cause`` (a label of ``[variables] <event>.codes``; None: a single event type).

        Every measure of a validation is of one cause, the study's ``[validation] cause``: this returns the
        object itself when it is of ``cause``, and an object with no models and no measures otherwise (its
        ``summary`` is empty), so code that filters by cause reads the same with one cause or several.
        """
        if cause == self.cause:
            return self
        return replace(self, models={}, comparisons=(), subgroups=(), added_value=(), internal={}, multicentre={},
                       curves={}, cause=cause)

    @classmethod
    def from_json(cls, path: str | Path, curves: str | Path | None = None, *, order: Sequence[str] | None = None,
                  predictions: pl.DataFrame | None = None, outcomes: pl.DataFrame | None = None) -> Validation:
        """Read ``metrics.json`` (and ``curves.json`` beside it, or ``curves``) back into the object.

        ``order``: model names in the study's order (metrics.json keeps them
        sorted). ``predictions``/``outcomes``: see the class attributes.

        Raises
        ------
        ValidateError
            The file is missing, not JSON, or lacks a key (named).
        """
        path = Path(path)
        data = _read(path, missing=f"{path}: no metrics yet; run `cohortlab validate` first")
        curves_path = Path(curves) if curves is not None else path.with_name("curves.json")
        curve_data = _read(curves_path, missing=None) if curves_path.exists() or curves is not None else {}
        return cls.from_dict(data, str(path), order=order, curves=curve_data, predictions=predictions,
                             outcomes=outcomes)

    # --- reading it ---------------------------------------------------------------------------------------

    def compare(self, a: str, b: str) -> dict[str, stats.Comparison]:
        """The paired DeLong comparison of models ``a`` and ``b`` (``auc_a - auc_b``) per split.

        From the stored comparisons when the pair (either way round) was
        compared; else computed from :attr:`predictions` with
        :func:`analytics.stats.compare_auc`.

        Raises
        ------
        ValidateError
            An unknown model, or a pair neither stored nor computable (no predictions held).
        """
        for name in (a, b):
            if name not in self.models:
                raise ValidateError(f"compare: no model {name!r}; the models are {', '.join(self.models) or 'none'}")
        found = [c for c in self.comparisons if (c.a, c.b) == (a, b)]
        found += [c.reversed() for c in self.comparisons if (c.a, c.b) == (b, a)]
        if not found:
            if self.predictions is None or self.outcomes is None:
                raise ValidateError(f"compare: {a} vs {b} was not stored, and there are no predictions to compute "
                                    "it from (use Study.validation(), which holds them)")
            found = paired_comparisons(self.predictions, self.outcomes, a, b, self.level)
        by_split = {c.split: c for c in found}
        return {s: by_split[s].to_stats() for s in SPLITS if s in by_split}

    def meta(self, model: str | None = None) -> pl.DataFrame:
        """The meta-analysis of performance across centres: one row per model, source (``external``: the external
        centres; ``iecv``: the left-out development centres of internal-external cross-validation) and pooled
        measure (``auc``, ``calibration_in_the_large``, ``calibration_recalibration_slope``, ``oe_ratio``; survival
        models ``c_index``, ``oe_ratio_t<horizon>``, ``lp_calibration_slope``) with the
        pooled estimate and CI, the prediction intervals (metafor ``predict.rma``'s; Riley et al. 2011's), tau²
        (on the pooling scale: logit for AUC, log for O:E), I², the centres pooled and the method. Empty
        when no model was validated on two or more external centres."""
        rows = []
        rank = {m: i for i, m in enumerate(self.models)}
        for mc in sorted(self.multicentre.values(), key=lambda x: (rank.get(x.model, len(rank)), x.model, x.split)):
            if model is not None and mc.model != model:
                continue
            for p in mc.pooled:
                r = p.result
                rows.append({"model": mc.model, "source": mc.split, "measure": p.measure, "k": int(r["k"]), "estimate": r["estimate"],
                             "low": r["low"], "high": r["high"], "pi_low": r.get("pi_low"), "pi_high": r.get("pi_high"),
                             "pi_riley_low": r.get("pi_riley_low"), "pi_riley_high": r.get("pi_riley_high"),
                             "tau2": r.get("tau2"), "i2": r.get("i2"), "scale": r["scale"], "method": r["method_text"],
                             "centers": ", ".join(p.centers)})
        schema = {"model": pl.String, "source": pl.String, "measure": pl.String, "k": pl.Int64, "estimate": pl.Float64, "low": pl.Float64,
                  "high": pl.Float64, "pi_low": pl.Float64, "pi_high": pl.Float64, "pi_riley_low": pl.Float64,
                  "pi_riley_high": pl.Float64, "tau2": pl.Float64, "i2": pl.Float64, "scale": pl.String,
                  "method": pl.String, "centers": pl.String}
        return pl.DataFrame(rows, schema=schema, orient="row")

    def curve(self, model: str, split: str, kind: str) -> pl.DataFrame:
        """One curve as a frame: ``roc`` (fpr, tpr, threshold), ``roc_band`` (specificity, low, high: the
        pointwise bootstrap band of sensitivity), ``decision``, ``km``, ``km_summary``,
        ``calibration`` (the loess curve) or ``calibration_bins`` (binned, with Wilson CIs)."""
        per = self.curves.get(model, {}).get(split, {})
        key = "calibration" if kind == "calibration_bins" else kind
        if key not in per:
            have = sorted(per) + (["calibration_bins"] if "calibration" in per else [])
            raise ValidateError(f"no {kind!r} curve for {model} / {split}; there are: {', '.join(have) or 'none'}")
        data = per[key]
        if kind == "calibration":
            return pl.DataFrame(data["smoothed"])
        if kind == "calibration_bins":
            return pl.DataFrame(data["binned"])
        return pl.DataFrame(data)

    def summary_text(self, measures: Iterable[str] | None = None, decimals: int = 3) -> str:
        """:meth:`print_summary`'s text."""
        level = f"{self.level * 100:g}%"
        keep = set(measures) if measures is not None else None
        body = self.summary.filter(pl.col("center").is_null() & ~pl.col("model").str.contains(" vs ", literal=True)
                                   & ~pl.col("measure").is_in(["n", "n_positive", "threshold"]))
        if keep is not None:
            body = body.filter(pl.col("measure").is_in(sorted(keep)))
        header = [("study", self.study), ("cohort", f"{self.cohort}" + (f" (hash {self.cohort_hash[:12]})" if self.cohort_hash else "")),
                  ("n", self._n_text()), ("models", ", ".join(self.models) or "none"), ("CI level", level),
                  ("bootstrap", f"{self.settings.get('n_boot', '-')} resamples"),
                  ("threshold rule", f"{self.settings.get('threshold_rule', '-')}, chosen on {THRESHOLD_CHOSEN_ON}")]
        width = max(len(k) for k, _ in header)
        lines = ["<cohortlab.Validation>", *(f"{k:>{width + 2}} = {v}" for k, v in header), "", "---"]
        # pooled over imputations: the number of imputations and the fraction of missing information too
        pooled = body.get_column("m").is_not_null().any()
        lines += _table(["model", "split", "measure", "estimate", f"lower {level}", f"upper {level}",
                         *(["m", "fmi"] if pooled else []), "method"],
                        [[r["model"], r["split"], r["measure"], fmt_number(r["estimate"], decimals),
                          fmt_number(r["low"], decimals), fmt_number(r["high"], decimals),
                          *([str(r["m"] or "-"), fmt_number(r["fmi"], decimals)] if pooled else []), r["method"]]
                         for r in body.iter_rows(named=True)], numeric={3, 4, 5, 6, 7} if pooled else {3, 4, 5})
        if self.comparisons:
            lines += ["---", "Paired comparisons, AUC a - AUC b (DeLong)"]
            lines += _table(["a", "b", "split", "n", "AUC a", "AUC b", "difference", f"lower {level}", f"upper {level}",
                             "z", "p"],
                            [[c.a, c.b, c.split, str(c.n), fmt_number(c.auc_a, decimals), fmt_number(c.auc_b, decimals),
                              fmt_number(c.difference, decimals), fmt_number(c.low, decimals),
                              fmt_number(c.high, decimals), fmt_number(c.z, 2), _fmt_p(c.p)] for c in self.comparisons],
                            numeric=set(range(3, 11)))
        if self.notes:
            lines += ["---", f"{len(self.notes)} note(s): what could not be computed, and why (Validation.notes)"]
        return "\n".join(lines) + "\n"

    def print_summary(self, measures: Iterable[str] | None = None, decimals: int = 3, file: IO[str] | None = None) -> None:
        """Print the study, cohort and patients, then one line per model, split and measure with its
        interval, then the paired comparisons (``measures``: only these)."""
        print(self.summary_text(measures, decimals), end="", file=file)

    def _n_text(self) -> str:
        """Patients validated per split (a range when models differ, e.g. some lack inputs)."""
        parts, total = [], 0
        for split in SPLITS:
            ns = sorted({m.splits[split].n for m in self.models.values() if split in m.splits})
            if ns:
                parts.append(f"{split} {ns[0]}" if len(ns) == 1 else f"{split} {ns[0]}-{ns[-1]}")
                total += ns[-1]
        return f"{total} ({', '.join(parts)})" if parts else "0"


def _fmt_p(p: float | None) -> str:
    return "-" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> list[str]:
    """Fixed-width lines: text columns left-aligned, numbers right-aligned, two spaces apart."""
    widths = [max([len(head[i]), *(len(r[i]) for r in rows)]) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [line(head), *(line(r) for r in rows)]
