# Reference values for analytics.stats.cox_validation (and the validate stage's lp_calibration):
# external validation of a Cox model as Royston & Altman (2013, BMC Med Res Methodol 13:33) do it, on
# their own example: a model developed on the Rotterdam breast-cancer cohort and validated on the German
# Breast Cancer Study Group trial (GBSG), both shipped with R's survival package (datasets `rotterdam` and `gbsg`).
#
#   Rscript tests/stats/royston_fixture.R    (from the repository root; needs R and survival)
#
# Writes beside this script:
#   royston_fixture.csv   the validation patients: rfstime (days), status, lp (the development model's
#                         linear predictor, not centred), each with 17 significant digits
#   royston_fixture.json  the development baseline cumulative hazard at the horizons, and R's answers:
#                         the calibration slope (coxph on lp, Efron ties, Wald interval) and the
#                         validation baseline survival at each horizon (Breslow: coxph with lp as an
#                         offset, survfit at lp = 0, ctype = 1), with the R and survival versions
library(survival)

here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))))

# development: recurrence-free survival (recurrence or death), in years
dev <- rotterdam
dev$rfs <- pmax(dev$recur, dev$death)
dev$ryear <- ifelse(dev$recur == 1, dev$rtime, dev$dtime) / 365.25
dev$size_cat <- factor(as.character(dev$size), levels = c("<=20", "20-50", ">50"))
dev$grade3 <- as.integer(dev$grade == 3)
dev$nodes_c <- pmin(dev$nodes, 20)

# validation: the GBSG trial's recurrence-free survival, predictors coded as in development
val <- gbsg
val$ryear <- val$rfstime / 365.25
val$size_cat <- cut(val$size, c(-Inf, 20, 50, Inf), labels = c("<=20", "20-50", ">50"))
val$grade3 <- as.integer(val$grade == 3)
val$nodes_c <- pmin(val$nodes, 20)

fit <- coxph(Surv(ryear, rfs) ~ age + meno + size_cat + grade3 + nodes_c + log1p(pgr) + log1p(er) + hormon,
             data = dev)
val$lp <- predict(fit, newdata = val, type = "lp", reference = "zero")

horizons <- c(3, 5)
h0 <- basehaz(fit, centered = FALSE)
h0_dev <- sapply(horizons, function(t) max(c(0, h0$hazard[h0$time <= t])))

# the calibration slope: the coefficient of lp refitted on the validation patients (Wald interval)
slope_fit <- coxph(Surv(ryear, status) ~ lp, data = val)
coef <- unname(coef(slope_fit))
se <- unname(sqrt(diag(vcov(slope_fit))))
ci <- unname(confint(slope_fit, level = 0.95)[1, ])

# the validation baseline survival: lp as an offset, Breslow's estimator of the baseline hazard
off_fit <- coxph(Surv(ryear, status) ~ offset(lp), data = val, ties = "breslow")
sf <- survfit(off_fit, newdata = data.frame(lp = 0), ctype = 1)
s0_val <- summary(sf, times = horizons, extend = TRUE)$surv

fmt <- function(x) sprintf("%.17g", x)
write.csv(data.frame(rfstime = val$rfstime, status = val$status, lp = fmt(val$lp)),
          file.path(here, "royston_fixture.csv"), row.names = FALSE, quote = FALSE)

num <- function(x) paste0("[", paste(fmt(x), collapse = ", "), "]")
json <- c(
  "{",
  sprintf('  "generator": "tests/stats/royston_fixture.R",'),
  sprintf('  "r_version": "%s",', R.version.string),
  sprintf('  "survival_version": "%s",', as.character(packageVersion("survival"))),
  '  "development": "survival::rotterdam, recurrence-free survival in years (rtime if recur else dtime) / 365.25",',
  '  "validation": "survival::gbsg, rfstime / 365.25 and status",',
  sprintf('  "n": %d,', nrow(val)),
  sprintf('  "events": %d,', sum(val$status)),
  sprintf('  "horizons": %s,', num(horizons)),
  sprintf('  "h0_development": %s,', num(h0_dev)),
  sprintf('  "slope": {"coef": %s, "se": %s, "low": %s, "high": %s, "level": 0.95},',
          fmt(coef), fmt(se), fmt(ci[1]), fmt(ci[2])),
  sprintf('  "s0_validation": %s,', num(s0_val)),
  sprintf('  "s0_development": %s,', num(exp(-h0_dev))),
  sprintf('  "baseline_survival_diff": %s', num(s0_val - exp(-h0_dev))),
  "}"
)
writeLines(json, file.path(here, "royston_fixture.json"))
