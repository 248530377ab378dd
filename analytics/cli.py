"""The ``cohortlab`` command line: one verb per stage, each a thin call into the library."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from analytics import stages
from pipeline.config import StudyConfig, load_config
from pipeline.errors import CohortlabError

app = typer.Typer(
    name="cohortlab",
    help="Imaging feature store and validation toolkit: manifests -> store -> cohorts -> models -> report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

StudyArg = Annotated[Path, typer.Argument(help="study.toml (or the folder that holds it)")]


class UserError(CohortlabError):
    """An error the user can fix; printed without a traceback."""


def _show(stage: str, result: Any) -> None:
    """Print a stage's result as the stage table says (:data:`analytics.stages.STAGES`)."""
    print(stages.BY_NAME[stage].show(result))


def _study(path: Path) -> StudyConfig:
    study = load_config(path)
    _log_to(study.log_dir, study.study.name)
    return study


# libraries whose INFO/DEBUG output (SHAP's sampling dumps, font searches, HTTP chatter) would drown the study log
THIRD_PARTY_LOGGERS = ("shap", "matplotlib", "PIL", "numba", "urllib3", "fsspec", "filelock", "h5py", "asyncio",
                       "httpx", "httpcore", "huggingface_hub", "timm", "torch", "xgboost", "numexpr", "joblib")


class _OwnOrWarning(logging.Filter):
    """Keep cohortlab's own records; of any other library's, only warnings and errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == "cohortlab" or record.name.startswith("cohortlab.")
        return own or record.levelno >= logging.WARNING


def quiet_third_party() -> None:
    """Set the loggers of :data:`THIRD_PARTY_LOGGERS` to WARNING (their debug records are then not even made)."""
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class _StudyLog(logging.FileHandler):
    """The study log file. A record it cannot write (the disk filled up) warns once on stderr and ends the
    log, instead of a traceback per record."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        if self.failed:
            return
        self.failed = True
        exc = sys.exc_info()[1]
        reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
        print(f"warning: cannot write the log {self.baseFilename}: {reason}; the log stops here", file=sys.stderr)


def fallback_log_dir(folder: Path, name: str | None) -> Path:
    """Where the log of a study whose log folder cannot be written goes: a folder of the system's temporary
    directory named after the study and a hash of ``folder`` (two studies of one name keep apart)."""
    import hashlib
    import re
    import tempfile

    digest = hashlib.sha256(os.fsencode(folder.resolve())).hexdigest()[:12]
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", name or "study")[:60]
    return Path(tempfile.gettempdir()) / "cohortlab-logs" / f"{label}-{digest}"


def _open_log(folder: Path) -> tuple[Path, logging.FileHandler | None]:
    """The log file in ``folder`` and a new handler on it, or None when this process already logs there."""
    folder.mkdir(parents=True, exist_ok=True)
    target = (folder / "cohortlab.log").resolve()
    if any(isinstance(h, logging.FileHandler) and h.baseFilename == str(target) for h in logging.getLogger().handlers):
        return target, None
    return target, _StudyLog(target, encoding="utf-8")


def _log_to(folder: Path, name: str | None = None) -> Path | None:
    """Log this command's records to ``folder``/cohortlab.log; returns that file (None: no log at all).

    A read-only study (or a ``logs`` that is not a folder) must not stop the
    commands that only read it (``sql``, ``cohort``, ``features``): the log
    then goes to :func:`fallback_log_dir`, with a one-line warning saying where.
    """
    quiet_third_party()
    root = logging.getLogger()
    try:
        target, handler = _open_log(folder)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        fallback = fallback_log_dir(folder, name)
        try:
            target, handler = _open_log(fallback)
        except OSError as again:
            print(f"warning: cannot write the study log in {folder} ({reason}) nor in {fallback} "
                  f"({again.strerror or again}); this command is not logged", file=sys.stderr)
            return None
        print(f"warning: cannot write the study log in {folder} ({reason}); this command logs to {target}",
              file=sys.stderr)
    if handler is None:
        return target
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_OwnOrWarning())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("cohortlab").info("command: %s", " ".join(sys.argv))
    return target


def _params(items: list[str] | None) -> dict[str, Any]:
    """``--param name=value`` pairs; values parse as TOML scalars/lists, else stay strings."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--param {item!r}: write name=value")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: write i/n, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


@app.command()
def demo(
    folder: Annotated[Path, typer.Argument(help="where to write the synthetic study")] = Path("demo"),
    report_dir: Annotated[Path | None, typer.Option(help="report folder (default reports/demo)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    fresh: Annotated[bool, typer.Option("--fresh", help="write the synthetic study again")] = False,
) -> None:
    """Synthesise a two-centre study (slides, CT, clinical data) and run every stage on it."""
    from analytics.demo import demo as run_demo

    result = run_demo(folder, report_dir=report_dir, device=device, fresh=fresh)
    print(result)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def ingest(study: StudyArg) -> None:
    """Load manifests into the store, validated, in one transaction."""
    _show("ingest", stages.ingest(_study(study)))


@app.command()
def embed(
    study: StudyArg,
    feature_set: Annotated[str | None, typer.Option("--feature-set", help="only this feature set")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    shard: Annotated[str | None, typer.Option(help="i/n: embed the i-th of n deterministic shards")] = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="run on Ray: local (start one here) | auto | ray://host:10001 (default: compute.ray of study.toml)")] = None,
) -> None:
    """Embed slides and scans into instance Parquet files and pooled patient features (resumable)."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device {device!r}: use auto, cpu or cuda")
    s = _study(study)
    if shard is not None and stages.ray_address(s, ray) is not None:
        raise UserError("--shard and --ray: Ray spreads the sources itself; give one of them")
    _show("embed", stages.embed(s, feature_set=feature_set, device=device, shard=_shard(shard), ray=ray))


@app.command()
def features(study: StudyArg) -> None:
    """Feature sets in the store, with provenance and progress, per source the node and device that embedded it,
    and the instance files that fail the content check (sha256, source_id)."""
    from pipeline import store

    s = _study(study)
    con = store.connect(s.store_path, read_only=True)
    try:
        _print_frame(store.feature_sets(con).select(
            "name", "modality", "encoder", "weights", "dim", "done", "failed", "instances", "code_version"
        ))
        items = store.embedded_items(con)
        if items.height:
            import polars as pl

            print("\nsources (node and device that embedded each; - where not recorded):")
            _print_frame(items.with_columns(pl.col("node", "device").fill_null("-")))
        failed = store.failed_items(con)
        if failed.height:
            print("\nfailed inputs:")
            _print_frame(failed)
        bad = store.unreadable_instances(con, content=True)  # every file hashed: bit rot keeps size and time
        if bad:
            print(f"\n{len(bad)} instance file(s) missing, unreadable or not the file written (left out of the "
                  "instances view; `cohortlab embed` embeds them again):")
            for problem in bad:
                print(f"  {problem}")
    finally:
        con.close()


def _warn_unreadable_instances(s: StudyConfig) -> None:
    """One line on stderr per instance file that queries cannot see (the log has them too)."""
    from pipeline import store

    if not s.store_path.exists():
        return
    con = store.connect(s.store_path, read_only=True)
    try:
        bad = store.unreadable_instances(con)
    finally:
        con.close()
    for problem in bad:
        print(f"warning: left out of the instances view: {problem}", file=sys.stderr)


@app.command()
def cohort(
    study: StudyArg,
    name: Annotated[str | None, typer.Argument(help="cohort name (default: the study's)")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="name=value, bound as $name")] = None,
) -> None:
    """Counts by split x label, patients missing features, and Table 1."""
    overview = stages.cohort(_study(study), name, _params(param))
    c, coverage = overview.cohort, overview.coverage
    print(f"cohort {c.name} ({c.file})  params {c.params or '{}'}  hash {c.hash[:12]}")
    print(f"{len(c)} patients\n")
    _print_table(c.counts())
    print("\nfeatures:")
    if coverage.height:
        _print_table(coverage)
    else:
        print("(no feature sets in study.toml)")
    if c.left_out:
        print(f"\n{len(c.left_out)} instance file(s) left out (counted as missing above; `cohortlab embed` "
              "embeds them again):")
        for problem in c.left_out:
            print(f"  {problem}")
    t1 = c.table1()
    for group in t1.groups:
        print(f"\nTable 1, {group}:")
        _print_table(t1.block(group))


@app.command()
def impute(study: StudyArg) -> None:
    """Multiple imputation of the development patients alone ([imputation] method = "mice"): imputations/ in
    mice's long format, with trace, md.pattern and diagnostics."""
    from tqdm.auto import tqdm

    from analytics.impute.study import impute_study

    s = _study(study)
    total = s.imputation.m * s.imputation.maxit if s.imputation is not None else 0
    with tqdm(total=total, desc="imputations x iterations", unit="it", disable=total == 0) as bar:
        done = impute_study(s, progress=bar.update)
    imp = done.imputations
    print(f"{imp.m} imputations of {len(imp.rows)} development patients -> {done.folder}")
    print("methods: " + ", ".join(f"{k} {v}" for k, v in imp.methods.items() if v))
    print("outcome in the models: " + (", ".join(done.outcome) or "none"))
    for flag in done.diagnostics.flags:
        print(f"flag: {flag}")


@app.command()
def verify(study: StudyArg) -> None:
    """Check every done instance file (sha256, source_id, footer) against the store; exit 1 on any problem."""
    result = stages.verify(_study(study))
    _show("verify", result)
    if not result.ok:
        print()
        _print_table(result.table())
        raise typer.Exit(1)


@app.command()
def sql(
    study: StudyArg,
    query: Annotated[str, typer.Argument(help="a read-only SQL query")],
    out: Annotated[Path | None, typer.Option(help="write CSV or Parquet here instead of printing")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="name=value, bound as $name")] = None,
) -> None:
    """Run an ad-hoc read-only query on the store."""
    s = _study(study)
    _warn_unreadable_instances(s)
    if out is not None and out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise UserError(f"--out {out}: write .csv or .parquet")
    from analytics.cohort import run_sql

    frame = run_sql(s, query, params=_params(param))
    if out is None:
        _print_table(frame)
        return
    _write_table(frame, out)
    print(f"{frame.height} rows -> {out}")


@app.command()
def fit(
    study: StudyArg,
    model: Annotated[list[str] | None, typer.Option("--model", help="only these models")] = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="internal-validation replicates on Ray: local | auto | ray://host:10001 (default: compute.ray)")] = None,
) -> None:
    """Train every model on the train split; write out-of-fold and held-out predictions."""
    _show("fit", stages.fit(_study(study), models=model, ray=ray))


@app.command()
def validate(
    study: StudyArg,
    partial: Annotated[bool, typer.Option("--partial", help="validate the models that have predictions, listing those left out")] = False,
) -> None:
    """Metrics with CIs per model and split; metrics.csv / metrics.json."""
    _show("validate", stages.validate(_study(study), partial=partial))


@app.command()
def explain(
    study: StudyArg,
    model: Annotated[list[str] | None, typer.Option("--model", help="only these models")] = None,
    patients: Annotated[list[str] | None, typer.Option("--patients", help="patients for waterfall plots / heatmaps")] = None,
) -> None:
    """SHAP explanations and MIL attention heatmaps under the report folder."""
    _show("explain", stages.explain(_study(study), models=model, patients=patients))


@app.command()
def report(
    study: StudyArg,
    force: Annotated[bool, typer.Option("--force", help="render again even when no input changed")] = False,
) -> None:
    """Write the self-contained HTML validation report (skipped when none of its inputs changed)."""
    _show("report", stages.report(_study(study), force=force))


@app.command()
def run(
    study: StudyArg,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """ingest -> embed -> cohort -> fit -> validate -> explain -> report, skipping finished work."""
    from analytics.run import run as run_all

    result = run_all(_study(study), device=device)
    print(result)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def predict(
    study: Annotated[Path | None, typer.Argument(help="study.toml (or its folder); not with --bundle")] = None,
    model: Annotated[str | None, typer.Option("--model", help="the fitted model that scores them")] = None,
    patients: Annotated[Path | None, typer.Option("--patients", help="CSV of new patients: patient_id, predictors")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="the CSV of risks to write (replaced in one step)")] = None,
    bundle: Annotated[Path | None, typer.Option("--bundle", help="a model bundle (cohortlab export) instead of a study")] = None,
    explain: Annotated[int, typer.Option("--explain", help="add each patient's N largest SHAP contributions")] = 0,
    slides: Annotated[Path | None, typer.Option("--slides", help="CSV of the new patients' slides (image models)")] = None,
    scans: Annotated[Path | None, typer.Option("--scans", help="CSV of the new patients' scans (image models)")] = None,
    device: Annotated[str, typer.Option("--device", help="where new images are embedded: auto, cpu, cuda")] = "auto",
    combat_min_patients: Annotated[int, typer.Option(
        "--combat-min-patients", help="new patients an unseen centre needs to be ComBat-harmonised")] = 20,
) -> None:
    """Score new patients with a fitted model: risks, CIs, risk group, flags, and why a patient was not scored."""
    from analytics.predict import predict_file
    from analytics.predict.images import ImageFiles

    images = ImageFiles(slides, scans, device)

    if patients is None or out is None:
        raise UserError("predict needs --patients new.csv and --out risks.csv")
    if (study is None) == (bundle is None):
        raise UserError("predict reads a study (study.toml --model NAME) or a bundle (--bundle FILE), one of them")
    if bundle is not None:
        from analytics.export.bundle import development_of, opened

        if explain:
            raise UserError("--explain reads the development patients: give the study, not --bundle")
        with opened(bundle) as (s, b):
            if model is not None and model != b.model:
                raise UserError(f"--model {model}: bundle {bundle} holds model {b.model!r}")
            frame = predict_file(s, b.model, patients, out, development_of(b), protect=[bundle], images=images,
                                 combat_min_patients=combat_min_patients)
            model = b.model
        print(f"bundle {bundle}: model {model}, manifest sha256 {b.digest}")
    else:
        if model is None:
            raise UserError("predict study.toml needs --model NAME")
        frame = predict_file(_study(study), model, patients, out, explain=explain,  # type: ignore[arg-type]
                             images=images, combat_min_patients=combat_min_patients)
    scored = frame.filter(frame["reason"].is_null()).height
    print(f"{scored} of {frame.height} patients scored by {model} -> {out}")
    if scored < frame.height:
        print(f"{frame.height - scored} not scored; column reason says why")


@app.command()
def export(
    study: StudyArg,
    model: Annotated[str, typer.Option("--model", help="the fitted model to export")],
    out: Annotated[Path, typer.Option("--out", help="the bundle to write (model.cohortlab), or the page")],
    calculator: Annotated[bool, typer.Option("--calculator", help="write an offline risk-calculator page instead")] = False,
    with_weights: Annotated[bool, typer.Option("--with-weights", help="pack an image model's local weights file")] = False,
) -> None:
    """Write a portable bundle of a fitted model (code-free files, sha256, model card), or its calculator page."""
    if calculator:
        from analytics.export.calculator import write_calculator

        write_calculator(_study(study), model, out)
        print(f"calculator of model {model} -> {out}")
        return
    from analytics.export import export_bundle

    digest = export_bundle(_study(study), model, out, with_weights=with_weights)
    print(f"model {model} -> {out} (manifest sha256 {digest})")


def _print_table(frame: Any) -> None:
    """A result table in full: every column, up to 500 rows (``cohort``, ``sql``)."""
    import polars as pl

    with pl.Config(tbl_rows=500, tbl_cols=-1, fmt_str_lengths=80, tbl_hide_dataframe_shape=True,
                   tbl_width_chars=400, tbl_hide_column_data_types=True):
        print(frame)


def _write_table(frame: Any, out: Path) -> None:
    """``frame`` as CSV or Parquet (by ``out``'s suffix), written atomically."""
    import polars as pl

    from pipeline import atomic

    try:
        with atomic.staged(out) as tmp:
            if out.suffix.lower() == ".csv":
                frame.write_csv(tmp)
            else:
                frame.write_parquet(tmp)
    except atomic.WriteError:
        raise  # names ``out`` already
    except (OSError, pl.exceptions.PolarsError) as exc:
        # the writer may name its temporary file, or no file at all ("No space left on device (os error 28)")
        text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc).strip().splitlines()[0]
        if isinstance(exc, OSError) or "os error" in text:
            raise UserError(f"--out {out}: cannot write: {text} (is the disk full or the folder not writable?); "
                            "nothing was written") from None
        raise UserError(f"--out {out}: cannot write this result ({text}); list columns need .parquet") from None


def _print_frame(frame: Any) -> None:
    import polars as pl

    with pl.Config(tbl_rows=200, tbl_cols=30, fmt_str_lengths=80, tbl_width_chars=200,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(frame)


def _os_message(exc: BaseException) -> str:
    """One line for an operating-system or storage error, naming the file when the error knows it."""
    from pipeline.atomic import WriteError

    if isinstance(exc, OSError) and not isinstance(exc, WriteError) and exc.filename is not None:
        return f"{os.fsdecode(exc.filename)}: {exc.strerror or exc}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# how DuckDB words a failed write of the store or its WAL (its FatalException / IOException carry no errno)
_WRITE_FAILURE_WORDS = ("no space left", "could not write", "read-only file system", "disk quota", "file too large",
                        "input/output error")


def _write_failure(exc: BaseException) -> str | None:
    """One line for DuckDB's failure to write a file (disk full ...), naming the file; None when it is not one."""
    import re

    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if not any(word in first.lower() for word in _WRITE_FAILURE_WORDS):
        return None
    named = re.search(r'file "([^"]+)"', first)
    return f"disk full (or not writable) while writing {named.group(1) if named else 'the store'}: {first}"


def _report_bug(exc: BaseException) -> int:
    """A bug: print its traceback, log it, and say where the log with it is; returns the exit status."""
    traceback.print_exception(exc)
    logs = _study_logs()
    if logs:
        logging.getLogger("cohortlab").error("unexpected error", exc_info=exc)
        print(f"this error and the steps before it are in the study log: {', '.join(map(str, logs))}",
              file=sys.stderr)
    return 1


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Command-line usage errors (a missing argument, an unknown option), from click or typer's own copy of it."""
    kinds: list[type[BaseException]] = []
    try:
        import click

        kinds.append(click.ClickException)
    except ImportError:  # newer typer carries its own click
        pass
    if hasattr(typer, "TyperException"):
        kinds.append(typer.TyperException)
    return tuple(kinds)


def _study_logs() -> list[Path]:
    """The study logs this process writes to (:func:`_log_to` adds one per command)."""
    return [Path(h.baseFilename) for h in logging.getLogger().handlers
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename).name == "cohortlab.log"]


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status.

    An error the user can act on (any :class:`~pipeline.errors.CohortlabError`)
    and an operating-system or storage error print one line and exit 1, and so
    does a failed stage of ``run``. Anything else is a bug: its traceback is
    printed (and logged), then a line naming the study log, and the status is 1.
    """
    import duckdb

    from pipeline.store import verified_once

    root = logging.getLogger()
    before = list(root.handlers)
    try:
        # without standalone mode click returns a command's exit code (typer.Exit) instead of exiting;
        # within one command an instance file's content is hashed once, however many stages read it
        with verified_once():
            code = app(args=argv, standalone_mode=False)
    except CohortlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if root.handlers:
            logging.getLogger("cohortlab").error("%s", exc)
        return 1
    except (OSError, duckdb.IOException, duckdb.FatalException, duckdb.TransactionException) as exc:
        # disk full, a file size limit, permissions: say where, briefly
        message = _write_failure(exc) if isinstance(exc, duckdb.Error) else None
        if message is None and isinstance(exc, (duckdb.FatalException, duckdb.TransactionException)):
            return _report_bug(exc)  # not a failed write: a bug, with its traceback
        message = message or _os_message(exc)
        print(f"error: {message}", file=sys.stderr)
        if root.handlers:
            logging.getLogger("cohortlab").error("%s", message, exc_info=exc)
        return 1
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        return 130
    except _usage_errors() as exc:
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            print(f"Error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except Exception as exc:
        return _report_bug(exc)
    finally:  # the log of this command's study closes with it (a second command may be another study's)
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
            handler.close()
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
