"""The TRIPOD+AI checklist, filled where a cohortlab run knows the answer.

TRIPOD+AI (Collins GS, Moons KGM, Dhiman P, et al. TRIPOD+AI statement:
updated guidance for reporting clinical prediction models that use regression
or machine learning methods. BMJ 2024;385:e078378) has 27 items, several with
sub-items. The requirement texts below are short paraphrases; the paper has
the full wording and the explanation of each item.

An item is "filled" when the run answers it (participant flow, sample sizes
and events per analysis, missing data, data splitting, predictor handling,
model type and tuning, performance measures with CIs, heterogeneity across
centres, ...), "partly" when the run gives the numbers but the author must add
context (e.g. the justification of the sample size: its text says what is
left), and "for the author"
otherwise. Filled items link to the report section that holds the evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

FILLED, PARTLY, AUTHOR = "filled from the run", "partly filled", "for the author"


@dataclass(frozen=True)
class Item:
    """One TRIPOD+AI item: number (e.g. "12c"), section, topic and a paraphrase of the requirement."""

    number: str
    section: str
    topic: str
    requirement: str


# number | section | topic | requirement (paraphrased)
_ITEM_TABLE = """
1 | Title | Title | Identify the study as developing or evaluating a prediction model, with the target population and the outcome.
2 | Abstract | Abstract | Follow the TRIPOD+AI for Abstracts checklist.
3a | Introduction | Background | Healthcare context (diagnostic or prognostic) and rationale, with references to existing models.
3b | Introduction | Background | Target population, intended purpose in the care pathway and intended users.
3c | Introduction | Background | Known health inequalities between sociodemographic groups.
4 | Introduction | Objectives | Study objectives, including development, evaluation or both.
5a | Methods | Data | Sources of data for development and evaluation, rationale and representativeness.
5b | Methods | Data | Dates of the data: start and end of accrual and, if applicable, of follow-up.
6a | Methods | Participants | Study setting, including the number and location of centres.
6b | Methods | Participants | Eligibility criteria.
6c | Methods | Participants | Treatments received and how they were handled, if relevant.
7 | Methods | Data preparation | Data pre-processing and quality checking, and whether similar across groups.
8a | Methods | Outcome | Definition of the outcome and time horizon, how and when assessed, and consistency across groups.
8b | Methods | Outcome | Qualifications and demographics of outcome assessors, if assessment is subjective.
8c | Methods | Outcome | Blinding of outcome assessment.
9a | Methods | Predictors | Choice of initial predictors and any pre-selection before model building.
9b | Methods | Predictors | Definition of all predictors, how and when measured, and blinding.
9c | Methods | Predictors | Qualifications and demographics of predictor assessors, if measurement is subjective.
10 | Methods | Sample size | How the study size was arrived at, for development and evaluation, and why it suffices.
11 | Methods | Missing data | How missing data were handled, with reasons for omitting data.
12a | Methods | Analytical methods | How the data were used, including partitioning into development and evaluation data.
12b | Methods | Analytical methods | How predictors were handled (functional form, rescaling, transformation, standardisation).
12c | Methods | Analytical methods | Type of model, rationale, model-building steps, hyper-parameter tuning and internal validation.
12d | Methods | Analytical methods | How heterogeneity of parameters and performance across clusters (e.g. centres) was handled and quantified.
12e | Methods | Analytical methods | All measures and plots of performance (discrimination, calibration, clinical utility) and model comparisons.
12f | Methods | Analytical methods | Any model updating (e.g. recalibration) arising from the evaluation.
12g | Methods | Analytical methods | How the model predictions were calculated for the evaluation (formula, code, object, API).
13 | Methods | Class imbalance | Class imbalance methods, why and how, and any recalibration afterwards.
14 | Methods | Fairness | Approaches to address model fairness and their rationale.
15 | Methods | Model output | Output of the model (probabilities, classes) and how any classification thresholds were identified.
16 | Methods | Training versus evaluation | Differences between development and evaluation data in setting, eligibility, outcome and predictors.
17 | Methods | Ethical approval | Ethics committee approval and informed consent or its waiver.
18a | Open science | Funding | Sources of funding and the role of funders.
18b | Open science | Conflicts of interest | Conflicts of interest and financial disclosures.
18c | Open science | Protocol | Where the protocol can be accessed, or that none was prepared.
18d | Open science | Registration | Registration of the study, or that it was not registered.
18e | Open science | Data sharing | Availability of the study data.
18f | Open science | Code sharing | Availability of the analytical code.
19 | Open science | Patient and public involvement | Patient and public involvement, or none.
20a | Results | Participants | Flow of participants, with numbers with and without the outcome and follow-up summary.
20b | Results | Participants | Characteristics overall and per data source or setting, with sample size, events and missing data.
20c | Results | Participants | For evaluation, comparison with the development data of important predictors and the outcome.
21 | Results | Model development | Number of participants and outcome events in each analysis (development, tuning, evaluation).
22 | Results | Model specification | Details of the full model (formula, code, object, API) and any restrictions on access or re-use.
23a | Results | Model performance | Performance estimates with confidence intervals, including key subgroups; plots.
23b | Results | Model performance | Heterogeneity of performance across clusters, if examined.
24 | Results | Model updating | Results of any model updating and the updated model's performance.
25 | Discussion | Interpretation | Overall interpretation, including fairness, in the context of objectives and previous studies.
26 | Discussion | Limitations | Limitations (sample, size, overfitting, missing data) and their effects on bias, uncertainty and generalisability.
27a | Discussion | Usability of the model | How poor-quality or unavailable input data should be assessed and handled in use.
27b | Discussion | Usability of the model | Whether users interact with the input data or the model, and the expertise required.
27c | Discussion | Usability of the model | Next steps for future research, with a view to applicability and generalisability.
"""
ITEMS: tuple[Item, ...] = tuple(Item(*line.split(" | ")) for line in _ITEM_TABLE.strip().splitlines())


@dataclass(frozen=True)
class RunFacts:
    """What one run knows, collected by the report for the checklist."""

    centers: tuple[str, ...] = ()
    external_centers: tuple[str, ...] = ()
    cohort: str | None = None
    cohort_params: str | None = None
    n_store: int = 0
    n_cohort: int | None = None
    n_labelled: int | None = None
    n_events: int | None = None
    split_rule: str = ""
    feature_sets: str = ""
    random_weights: tuple[str, ...] = ()
    models: str = ""
    threshold_rules: tuple[str, ...] = ()
    per_analysis: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    has_metrics: bool = False
    has_centers: bool = False
    has_survival: bool = False
    # survival models (time-to-event endpoint) with measures at fixed horizons
    has_survival_models: bool = False
    has_comparisons: bool = False
    has_added_value: bool = False
    code_version: str = ""
    manifests: tuple[str, ...] = ()
    n_failed: int = 0
    has_table1: bool = False
    class_weights: tuple[str, ...] = ()
    level: float = 0.95
    n_boot: int = 0
    nested: tuple[str, ...] = ()  # models on other models' scores whose training estimate is nested
    not_nested: tuple[str, ...] = ()  # ... and those whose training estimate is optimistic
    subgroups: tuple[str, ...] = ()  # cohort columns whose subgroups were validated
    sample_size: tuple[str, ...] = ()  # per model: training n against the Riley minimum
    competing_outcome: str | None = None  # how competing events were handled (competing causes only)
    imputation: str = ""  # how missing clinical values were handled ([imputation]; the missing-data section)


@dataclass(frozen=True)
class Row:
    """One checklist row as the report shows it."""

    item: Item
    status: str
    text: str
    links: tuple[tuple[str, str], ...] = ()  # (element id, label)
    flags: tuple[str, ...] = ()  # warnings the report shows in red

    @property
    def filled(self) -> bool:
        return self.status != AUTHOR


Answer = tuple[str, str, tuple[tuple[str, str], ...]] | None


def _centres(f: RunFacts) -> Answer:
    if not f.centers:
        return None
    ext = f", external: {', '.join(f.external_centers)}" if f.external_centers else ""
    return (PARTLY, f"{len(f.centers)} centre(s): {', '.join(f.centers)}{ext}. The care setting and locations: for the author.",
            (("flow", "participant flow"),))


def _eligibility(f: RunFacts) -> Answer:
    if f.cohort is None:
        return None
    return (FILLED, f"Patients selected by the cohort SQL '{f.cohort}' (parameters: {f.cohort_params}); "
                    "the SQL text is shown in the report.", (("cohort-sql", "cohort SQL"),))


def _preparation(f: RunFacts) -> Answer:
    if not f.feature_sets:
        return None
    rnd = (f" Feature sets {', '.join(f.random_weights)} use random, untrained encoder weights."
           if f.random_weights else "")
    failed = f" {f.n_failed} input(s) failed pre-processing and are listed." if f.n_failed else ""
    return (FILLED, f"Image pre-processing per feature set: {f.feature_sets}.{rnd}{failed}",
            (("sec-features", "feature sets"), ("sec-failed", "failed inputs")))


def _predictors(f: RunFacts) -> Answer:
    if not f.models:
        return None
    return (PARTLY, f"Model inputs: {f.models}. How and when the clinical predictors were measured: for the author.",
            (("sec-models", "models"), ("sec-features", "feature sets")))


def _sample_size(f: RunFacts) -> Answer:
    if f.n_cohort is None:
        return None
    if f.sample_size:
        return (PARTLY, f"{f.n_cohort} patients in the cohort, {f.n_labelled} with an outcome, {f.n_events} events. "
                        "Training patients against the Riley et al. (2020) minimum sample size: "
                        f"{'; '.join(f.sample_size)}. Further justification: for the author.",
                (("flow", "participant flow"), ("sample-size", "sample size")))
    return (PARTLY, f"{f.n_cohort} patients in the cohort, {f.n_labelled} with an outcome, {f.n_events} events. "
                    "The justification (e.g. a sample-size calculation): for the author.", (("flow", "participant flow"),))


def _fairness(f: RunFacts) -> Answer:
    if not f.subgroups:
        return None
    return (PARTLY, f"Performance per subgroup of {', '.join(f.subgroups)}: patients, events, AUC with DeLong CI and "
                    "calibration-in-the-large per split, with forest plots. Approaches to address unfairness and "
                    "their rationale: for the author.", (("sec-subgroups", "subgroups"),))


def _missing(f: RunFacts) -> Answer:
    if f.n_cohort is None:
        return None
    miss = "; ".join(f.missing) if f.missing else "no missing values in the cohort's variables"
    excl = "; ".join(f.excluded)
    handled = (f"missing clinical values: {f.imputation}" if f.imputation else
               "missing clinical values are handled inside each model's pipeline, fitted on training patients only")
    return (FILLED, f"Missing values: {miss}. Exclusions: {excl}. Patients without a model's image inputs get no "
                    f"prediction from it (complete-case for image features); {handled}.",
            (("missing-data", "missing data"), ("sec-missing", "missing data and imputation"),
             ("flow", "participant flow")))


def _splitting(f: RunFacts) -> Answer:
    if not f.split_rule:
        return None
    return (FILLED, f"Patient-level split: {f.split_rule}. Thresholds, risk cut-points and all fitted steps use "
                    "training patients only; training performance is out-of-fold.", (("cohort-split", "split rule"),))


def _handling(f: RunFacts) -> Answer:
    if not f.models:
        return None
    imputed = f" Missing clinical values: {f.imputation}." if f.imputation else ""
    return (PARTLY, "Each model's preprocessing (imputation, scaling, encoding) is part of its fitted pipeline and "
                    f"fitted on training patients only; see the model manifests.{imputed} Functional forms: for the "
                    "author.", (("sec-models", "models"),))


def _model_type(f: RunFacts) -> Answer:
    if not f.models:
        return None
    man = f" Manifests of the fitted models: {', '.join(f.manifests)}." if f.manifests else ""
    nested = (f" Internal validation of models on other models' scores ({', '.join(f.nested)}) by nested "
              "cross-fitting: in each outer fold the input models were refitted and cross-fitted on the training "
              "patients outside it." if f.nested else "")
    return (FILLED, f"{f.models}.{man}{nested} Rationale for the model choice: for the author.",
            (("sec-models", "models"),))


def _heterogeneity_methods(f: RunFacts) -> Answer:
    if not f.has_centers:
        return None
    return (FILLED, "AUC with DeLong CI per centre and split (training out-of-fold and held-out scores are never "
                    "pooled); external validation on held-out centre(s).",
            (("centers", "performance by centre"),))


def _measures(f: RunFacts) -> Answer:
    if not f.has_metrics:
        return None
    parts = [f"AUC with DeLong and stratified bootstrap ({f.n_boot} resamples) {f.level:.0%} CIs",
             "sensitivity, specificity, accuracy, PPV, NPV and F1 at the training threshold",
             "calibration-in-the-large, logistic recalibration intercept and slope, Brier score and ICI with "
             "calibration plots", "decision curves",
             "ROC curves with bootstrap bands"]
    if f.has_survival:
        parts.append("Harrell's C-index and Kaplan-Meier curves by risk group with log-rank tests")
    if f.has_survival_models:
        parts.append("for survival models, on every patient with follow-up: Harrell's and Uno's C (IPCW), AUC(t) "
                     "and Brier(t) with inverse-probability-of-censoring weights, smooth calibration (ICI, E50, "
                     "E90) and time-dependent ROC curves at each horizon, a decision curve at the main horizon, and "
                     "on held-out patients the calibration slope of the linear predictor and the difference in "
                     "baseline survival")
    if f.has_comparisons:
        parts.append("paired DeLong tests between models")
    links: tuple[tuple[str, str], ...] = (("sec-performance", "performance"), ("sec-calibration", "calibration"),
             ("sec-decision", "decision curves"), ("sec-comparison", "comparison"))
    if f.has_added_value:
        parts.append("added value of one model over another: continuous and categorical net reclassification "
                     "improvement, integrated discrimination improvement and, for nested maximum-likelihood "
                     "logistic models, the likelihood-ratio test")
        links += (("sec-added-value", "added value"),)
    return (FILLED, "; ".join(parts) + ".", links)


def _predictions(f: RunFacts) -> Answer:
    if not f.has_metrics:
        return None
    return (PARTLY, f"Predictions by cohortlab {f.code_version} from the fitted models saved under models/<name>/; "
                    "how they are made available: for the author.", (("sec-models", "models"),))


def _imbalance(f: RunFacts) -> Answer:
    if not f.class_weights:
        return None
    return (PARTLY, f"Class weighting recorded in the fitted models: {'; '.join(f.class_weights)}. Why, and any "
                    "recalibration: for the author.", (("sec-models", "models"),))


def _output(f: RunFacts) -> Answer:
    if not f.threshold_rules:
        return None
    return (FILLED, f"Predicted probabilities; classification threshold by {', '.join(f.threshold_rules)}, applied "
                    "unchanged to the validation splits.", (("sec-models", "models"),))


def _differences(f: RunFacts) -> Answer:
    if not f.has_table1:
        return None
    return (PARTLY, "Table 1 compares predictors and outcome across the development and validation splits; "
                    "differences in setting and eligibility: for the author.", (("table1", "Table 1"),))


def _code(f: RunFacts) -> Answer:
    return (PARTLY, f"Analysis code version {f.code_version}; where the code is available: for the author.", ())


def _flow(f: RunFacts) -> Answer:
    if f.n_cohort is None:
        return None
    return (FILLED, f"{f.n_store} patients in the store, {f.n_cohort} in the cohort, {f.n_labelled} with an outcome "
                    f"({f.n_events} events); per centre and split in the flow table.", (("flow", "participant flow"),))


def _characteristics(f: RunFacts) -> Answer:
    if not f.has_table1:
        return None
    return (FILLED, "Table 1 by split and outcome, and missing data per variable and split.",
            (("table1", "Table 1"), ("missing-data", "missing data")))


def _comparison_dev(f: RunFacts) -> Answer:
    if not f.has_table1:
        return None
    return (FILLED, "Table 1 shows the training, internal and external splits side by side.", (("table1", "Table 1"),))


def _per_analysis(f: RunFacts) -> Answer:
    if not f.per_analysis:
        return None
    return (FILLED, "; ".join(f.per_analysis) + ".", (("sec-performance", "performance"),))


def _specification(f: RunFacts) -> Answer:
    if not f.models:
        return None
    return (PARTLY, "Fitted models are saved under models/<name>/ with their manifests; access and re-use "
                    "restrictions: for the author.", (("sec-models", "models"),))


def _performance(f: RunFacts) -> Answer:
    if not f.has_metrics:
        return None
    if f.subgroups:
        return (FILLED, f"All measures with {f.level:.0%} CIs per split, with ROC, calibration, decision and survival "
                        f"plots; AUC and calibration-in-the-large per subgroup of {', '.join(f.subgroups)}.",
                (("sec-performance", "performance"), ("sec-roc", "ROC"), ("sec-subgroups", "subgroups")))
    return (FILLED, f"All measures with {f.level:.0%} CIs per split, with ROC, calibration, decision and survival plots. "
                    "Sociodemographic subgroups: for the author.", (("sec-performance", "performance"), ("sec-roc", "ROC")))


def _outcome(f: RunFacts) -> Answer:
    if f.competing_outcome is None:
        return None
    return (PARTLY, f.competing_outcome + " Assessment and its timing: for the author.",
            (("sec-survival", "cumulative incidence"),))


def _heterogeneity(f: RunFacts) -> Answer:
    if not f.has_centers:
        return None
    return (FILLED, "AUC per centre and split with CIs.", (("centers", "performance by centre"),))


FILL: MappingProxyType[str, Callable[[RunFacts], Answer]] = MappingProxyType({
    "6a": _centres, "6b": _eligibility, "7": _preparation, "8a": _outcome, "9b": _predictors, "10": _sample_size, "11": _missing,
    "12a": _splitting, "12b": _handling, "12c": _model_type, "12d": _heterogeneity_methods, "12e": _measures,
    "12g": _predictions, "13": _imbalance, "14": _fairness, "15": _output, "16": _differences, "18f": _code, "20a": _flow, "20b": _characteristics,
    "20c": _comparison_dev, "21": _per_analysis, "22": _specification, "23a": _performance, "23b": _heterogeneity,
})


def _optimistic(f: RunFacts) -> tuple[str, ...]:
    return tuple(f"{m}: training estimate not nested: optimistic" for m in f.not_nested)


# items whose filled answer carries red warnings: internal validation and performance
FLAGS: MappingProxyType[str, Callable[[RunFacts], tuple[str, ...]]] = MappingProxyType({
    "12c": _optimistic, "23a": _optimistic,
})


def checklist(facts: RunFacts) -> list[Row]:
    """Every TRIPOD+AI item, filled from ``facts`` where possible, else marked for the author."""
    rows = []
    for item in ITEMS:
        fill = FILL.get(item.number)
        answer = fill(facts) if fill is not None else None
        if answer is None:
            rows.append(Row(item, AUTHOR, ""))
        else:
            status, text, links = answer
            flags = FLAGS[item.number](facts) if item.number in FLAGS else ()
            rows.append(Row(item, status, text, links, flags))
    return rows
