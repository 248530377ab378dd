# Reference values for analytics.stats.time_curves: the Kaplan-Meier risk by t, observed against
# predicted risk per group of predicted risk, and the IPCW cumulative/dynamic ROC curve at t.
#
#   Rscript tests/stats/time_curves_fixture.R    (from the repository root; needs survival, riskRegression)
#
# Data: survival::lung (NCCTG advanced lung cancer), the 227 patients with age, sex and ph.ecog;
# the "risk" is plogis of a Cox linear predictor on those, rounded to 2 decimals (tied risks; lung's
# times are tied too). Writes beside this script:
#   time_curves_fixture.csv    time (days), event (0/1), risk
#   time_curves_fixture.json   per horizon t: 1 - survfit()$surv at t (all patients, and per group of
#                              predicted risk as km_calibration_points cuts them), and riskRegression::Score's
#                              ROC plot frame (risk threshold, TPR, FPR; IPCW, Kaplan-Meier censoring) and AUC(t);
#                              with the R, survival and riskRegression versions
suppressMessages({
  library(survival)
  library(riskRegression)
  library(prodlim)
})

here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))))

d <- lung[complete.cases(lung[, c("time", "status", "age", "sex", "ph.ecog")]), ]
d$event <- d$status - 1
fit <- coxph(Surv(time, event) ~ age + sex + ph.ecog, data = d)
d$risk <- round(plogis(predict(fit, type = "lp")), 2)
horizons <- c(180, 365)

km_risk <- function(time, event, t) {
  s <- summary(survfit(Surv(time, event) ~ 1), times = t, extend = TRUE)$surv
  1 - s
}

# the groups of km_calibration_points: sorted by risk (stable), cut into k groups whose sizes differ by at
# most one, the larger first (numpy's array_split), k = min(10, max(1, n %/% 5))
n <- nrow(d)
k <- min(10, max(1, n %/% 5))
sizes <- n %/% k + (seq_len(k) <= n %% k)
ord <- order(d$risk, method = "radix")  # stable
group <- integer(n)
group[ord] <- rep(seq_len(k), sizes)

sc <- Score(list(m = d$risk), formula = Hist(time, event) ~ 1, data = d, times = horizons, metrics = "auc",
            plots = "roc", null.model = FALSE, cens.model = "km")
roc <- as.data.frame(sc$ROC$plotframe)

out <- list(
  r_version = paste(R.version$major, R.version$minor, sep = "."),
  survival_version = as.character(packageVersion("survival")),
  riskRegression_version = as.character(packageVersion("riskRegression")),
  n = n, events = sum(d$event), groups = k,
  horizons = lapply(horizons, function(t) list(
    t = t,
    km_risk = km_risk(d$time, d$event, t),
    group_predicted = sapply(seq_len(k), function(g) mean(d$risk[group == g])),
    group_observed = sapply(seq_len(k), function(g) km_risk(d$time[group == g], d$event[group == g], t)),
    group_n = as.integer(sizes),
    roc_risk = roc$risk[roc$times == t], roc_tpr = roc$TPR[roc$times == t], roc_fpr = roc$FPR[roc$times == t],
    auc = sc$AUC$score$AUC[sc$AUC$score$times == t]
  ))
)
write.csv(data.frame(time = d$time, event = d$event, risk = sprintf("%.2f", d$risk)),
          file.path(here, "time_curves_fixture.csv"), row.names = FALSE, quote = FALSE)
jsonlite::write_json(out, file.path(here, "time_curves_fixture.json"), auto_unbox = TRUE, digits = NA, pretty = TRUE)
