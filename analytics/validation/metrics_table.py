"""The store's ``metrics`` table: the summary rows of a validation, replaced in one transaction."""

from __future__ import annotations

from collections.abc import Set
from pathlib import Path

import polars as pl

from analytics.validation.result import Validation
from pipeline import store

METRICS_TABLE = {"model": pl.String, "split": pl.String, "metric": pl.String, "estimate": pl.Float64,
                 "low": pl.Float64, "high": pl.Float64, "method": pl.String, "cause": pl.String}


def write_metrics_table(store_path: Path, validation: Validation, internal_labels: Set[str]) -> None:
    """Replace the store's ``metrics`` rows with ``validation``'s summary rows.

    The table is keyed by (model, split, metric) and has no z / p or centre columns: per-centre rows live in
    metrics.csv/json only, and a comparison's z and p go into its method text. Internal validation's apparent /
    optimism / corrected rows share a metric name (their method starts with one of ``internal_labels``), so they
    live in the files only too. ``cause`` is the competing-risk study's cause of interest (NULL otherwise). A
    measure pooled over imputations by Rubin's rules ends its method with ``fmi=<fraction of missing information>``
    (its method already names ``m``), as a comparison's z and p do: the table keeps its columns.
    """
    stored = [{"model": r["model"], "split": r["split"], "metric": r["measure"], "estimate": r["estimate"],
               "low": r["low"], "high": r["high"],
               "method": (r["method"] if r["z"] is None else f"{r['method']} z={r['z']!r} p={r['p']!r}")
               + ("" if r.get("fmi") is None else f" fmi={r['fmi']!r}"),
               "cause": r.get("cause") or None}
              for r in validation.rows() if r["center"] is None
              and str(r["method"]).split(":", 1)[0] not in internal_labels]
    table = pl.DataFrame(stored, schema=METRICS_TABLE)
    con = store.connect(store_path)
    try:
        with store.transaction(con):
            con.execute("DELETE FROM metrics")
            con.register("_metrics_new", table.unique(subset=["model", "split", "metric"], keep="first",
                                                       maintain_order=True).to_arrow())
            con.execute("INSERT INTO metrics (model, split, metric, estimate, low, high, method, cause) "
                        "SELECT model, split, metric, estimate, low, high, method, cause FROM _metrics_new")
            con.unregister("_metrics_new")
    finally:
        con.close()
