# Reference values for tests/stats/test_stats_survival_time.py, computed with R
# (survival, riskRegression) on two public data sets the tests ship:
#   gbsg.csv   survival::gbsg (German Breast Cancer Study Group, 686 patients,
#              recurrence-free survival in days; censoring spread over follow-up)
#   rossi.csv  carData::Rossi (432 prisoners, weeks to re-arrest; many tied times,
#              censored only at week 52), written by make_proc_reference.R
#
# Run from the repository root:
#   Rscript tests/stats/data/make_survival_time_reference.R
# Needs: r-base-core r-cran-survival r-cran-riskregression r-cran-rms r-cran-jsonlite
# (Debian packages). Writes into tests/stats/data/:
#   gbsg.csv                        the gbsg data, unchanged
#   survival_time_reference.json    per data set: the Cox linear predictor (risk),
#       predicted risks at three horizons (risk_at), Uno's and Harrell's C with
#       their variances (survival::concordance, timewt = "n/G2" / "n", with and
#       without ymax), AUC(t) and Brier(t) with standard errors and intervals
#       (riskRegression::Score, cens.model = "km", conservative = FALSE), and
#       the integrated Brier score (Score, summary = "ibs") on a grid; for gbsg
#       also calibration at the last horizon as Austin, Harrell & van Klaveren
#       (Stat Med 2020): rms::cph on rcs(cloglog(risk), 3), survest, ICI/E50/E90.
# The tests read these files; they never need R.

suppressPackageStartupMessages({
  library(survival)
  library(riskRegression)
  library(rms)
  library(jsonlite)
})

out_dir <- file.path("tests", "stats", "data")
versions <- list(
  R = R.version.string,
  survival = as.character(packageVersion("survival")),
  riskRegression = as.character(packageVersion("riskRegression")),
  prodlim = as.character(packageVersion("prodlim")),
  rms = as.character(packageVersion("rms"))
)

data(cancer, package = "survival")
write.csv(gbsg, file.path(out_dir, "gbsg.csv"), row.names = FALSE)
rossi <- read.csv(file.path(out_dir, "rossi.csv"))

one_dataset <- function(d, formula, horizons, grid, tau) {
  d$time <- d[[all.vars(formula)[1]]]
  d$event <- d[[all.vars(formula)[2]]]
  fit <- coxph(formula, data = d, x = TRUE, ties = "efron")
  # Rounded so that the tests use exactly the risks R used.
  lp <- round(unname(predict(fit, type = "lp")), 10)

  conc_one <- function(timewt, ymax = NULL) {
    cc <- concordance(Surv(time, event) ~ lp, data = d, reverse = TRUE,
                      timewt = timewt, ymax = ymax)
    list(c = unname(cc$concordance), var = unname(cc$var), se = sqrt(unname(cc$var)))
  }
  conc <- list(uno = conc_one("n/G2"), uno_tau = conc_one("n/G2", ymax = tau),
               harrell = conc_one("n"), harrell_tau = conc_one("n", ymax = tau))

  risk_at <- round(predictRisk(fit, newdata = d, times = horizons), 10)
  sc <- Score(list(cox = risk_at), formula = Surv(time, event) ~ 1, data = d,
              times = horizons, metrics = c("auc", "brier"), cens.model = "km",
              null.model = FALSE, se.fit = TRUE, conservative = FALSE,
              split.method = "none", conf.int = 0.95)
  auc <- as.data.frame(sc$AUC$score)
  brier <- as.data.frame(sc$Brier$score)

  risk_grid <- round(predictRisk(fit, newdata = d, times = grid), 10)
  sc_ibs <- Score(list(cox = risk_grid), formula = Surv(time, event) ~ 1, data = d,
                  times = grid, metrics = "brier", summary = "ibs", cens.model = "km",
                  null.model = FALSE, se.fit = FALSE, split.method = "none")
  ibs <- as.data.frame(sc_ibs$Brier$score)

  list(
    model = deparse(formula),
    tau = tau,
    risk = lp,
    concordance = conc,
    horizons = horizons,
    risk_at = risk_at,
    auc = list(estimate = auc$AUC, se = auc$se, low = auc$lower, high = auc$upper),
    brier = list(estimate = brier$Brier, se = brier$se, low = brier$lower, high = brier$upper),
    ibs = list(grid = grid, risk_at_grid = risk_grid, brier = ibs$Brier, ibs = ibs$IBS)
  )
}

# Calibration at t (Austin, Harrell & van Klaveren 2020, their R code).
calibration_at <- function(d, time, event, p, t) {
  d$cll <- log(-log(1 - p))
  d$time <- d[[time]]
  d$event <- d[[event]]
  fit <- cph(Surv(time, event) ~ rcs(cll, 3), data = d, x = TRUE, y = TRUE, surv = TRUE)
  obs <- 1 - survest(fit, newdata = data.frame(cll = d$cll), times = t)$surv
  err <- abs(obs - p)
  list(t = t, observed = obs, ici = mean(err), e50 = median(err),
       e90 = unname(quantile(err, 0.9)))
}

ref <- list(
  versions = versions,
  gbsg = one_dataset(gbsg, Surv(rfstime, status) ~ age + meno + size + grade + nodes +
                       pgr + er + hormon,
                     horizons = c(365, 1095, 1826), grid = seq(60, 1800, by = 60),
                     tau = 1826),
  gbsg_calibration = NULL,
  rossi = one_dataset(rossi, Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio,
                      horizons = c(13, 26, 39), grid = 1:52, tau = 39)
)
ref$gbsg_calibration <- calibration_at(gbsg, "rfstime", "status", ref$gbsg$risk_at[, 3], 1826)
writeLines(toJSON(ref, digits = NA, auto_unbox = TRUE, pretty = FALSE, matrix = "rowmajor"),
           file.path(out_dir, "survival_time_reference.json"))
cat("wrote", file.path(out_dir, "survival_time_reference.json"), "\n")
