# Reference values for analytics.stats.internal: rms::validate (lrm, cph; bootstrap and
# cross-validation) and rms::calibrate (lrm), with the resample indices R drew, so that the Python
# tests refit on exactly R's resamples.  Run from the repository root:
#   Rscript tests/internal/rms_validate_fixture.R
# (jsonlite loads first: it has its own validate().)
# predab.resample draws sample(n, replace = TRUE) once per replicate and nothing else in its loop
# uses the RNG (lrm.fit, coxphFit, somers2, lowess are deterministic), so re-running the same draws
# after the same set.seed() gives R's indices; the Python tests prove it by matching every index.
suppressPackageStartupMessages({ library(jsonlite); library(rms) })

out <- list(R = R.version.string, rms = as.character(packageVersion("rms")),
            survival = as.character(packageVersion("survival")))
tab <- function(v) {
  m <- unclass(v)
  list(index = rownames(m), original = unname(m[, "index.orig"]), training = unname(m[, "training"]),
       test = unname(m[, "test"]), optimism = unname(m[, "optimism"]),
       corrected = unname(m[, "index.corrected"]), n = unname(m[, "n"]))
}
B <- 40

# Binary: relapse in the National Wilms Tumor Study (survival::nwtco), a random 1,000 of 4,028.
set.seed(20240601)
d <- survival::nwtco[sort(sample(nrow(survival::nwtco), 1000)), ]
d$histol <- factor(d$histol); d$stage <- factor(d$stage)
f <- lrm(rel ~ histol + stage + age, data = d, x = TRUE, y = TRUE)
n <- nrow(d)
set.seed(1); vb <- validate(f, B = B)
set.seed(1); ib <- t(sapply(seq_len(B), function(i) sample(n, replace = TRUE)))
set.seed(2); vc <- validate(f, method = "crossvalidation", B = 10)
set.seed(2); sc <- sample(n, replace = FALSE)
set.seed(3); cal <- calibrate(f, B = B)
set.seed(3); ic <- t(sapply(seq_len(B), function(i) sample(n, replace = TRUE)))
cal_print <- capture.output(print(cal))
pred <- attr(cal, "predicted")
s <- !is.na(cal[, "predy"] + cal[, "calibrated.corrected"])
err <- pred - approx(cal[s, "predy"], cal[s, "calibrated.corrected"], xout = pred, ties = mean)$y
out$binary <- list(
  data = list(rel = d$rel, histol = as.integer(as.character(d$histol)),
              stage = as.integer(as.character(d$stage)), age = d$age),
  design = unname(f$x), coefficients = unname(coef(f)),
  validate_boot = tab(vb), boot_indices = ib,
  validate_cv = tab(vc), cv_permutation = sc, cv_groups = 10,
  calibrate = list(predy = unname(cal[, "predy"]), apparent = unname(cal[, "calibrated.orig"]),
                   corrected = unname(cal[, "calibrated.corrected"]),
                   optimism = unname(cal[, "optimism"]),
                   mae = mean(abs(err), na.rm = TRUE), mse = mean(err^2, na.rm = TRUE),
                   q90 = unname(quantile(abs(err), 0.9, na.rm = TRUE)), n = unname(cal[, "n"]),
                   printed = cal_print),
  calibrate_indices = ic)

# Survival: advanced lung cancer (survival::lung), complete cases, Efron ties (cph's default).
l <- na.omit(survival::lung[, c("time", "status", "age", "sex", "ph.ecog")])
l$status <- l$status - 1
g <- cph(Surv(time, status) ~ age + sex + ph.ecog, data = l, x = TRUE, y = TRUE, surv = TRUE,
         time.inc = 365)
m <- nrow(l)
set.seed(4); vs <- validate(g, B = B)
set.seed(4); is_ <- t(sapply(seq_len(B), function(i) sample(m, replace = TRUE)))
set.seed(5); vsc <- validate(g, method = "crossvalidation", B = 5)
set.seed(5); ssc <- sample(m, replace = FALSE)
out$survival <- list(
  data = as.list(l), design = unname(g$x), coefficients = unname(coef(g)),
  validate_boot = tab(vs), boot_indices = is_,
  validate_cv = tab(vsc), cv_permutation = ssc, cv_groups = 5)

# Survival calibration at u = 365 days, cmethod = "KM" (groups of m = 50 patients), B = 40.  For each of
# R's resamples, the bootstrap model's predicted 1-year survival of the resample and of all patients,
# computed as calibrate.cph's coxfit/distance do (a cph on the resample's design matrix, its baseline
# survival at u raised to exp(lp - center)), so the Python test can feed R's own predictions.
u <- 365
set.seed(6); cc <- calibrate(g, cmethod = "KM", u = u, m = 50, B = B)
set.seed(6); ik <- t(sapply(seq_len(B), function(i) sample(m, replace = TRUE)))
X <- g$x
surv_app <- surv_test <- vector("list", B)
for (b in seq_len(B)) {
  i <- ik[b, ]
  etime <- l$time[i]; e <- l$status[i]; xx <- X[i, , drop = FALSE]
  fb <- cph(Surv(etime, e) ~ xx, surv = TRUE, time.inc = u)
  lp <- drop(X %*% coef(fb))
  s0 <- fb$surv.summary[2, , 1]
  surv_app[[b]] <- as.vector(s0^exp(lp[i] - fb$center))
  surv_test[[b]] <- as.vector(s0^exp(lp - fb$center))
}
cm <- unclass(cc)
out$survival$calibrate_km <- list(
  u = u, m = 50, predicted = as.vector(attr(cc, "predicted")),
  mean_predicted = unname(cm[, "mean.predicted"]), KM = unname(cm[, "KM"]),
  KM_corrected = unname(cm[, "KM.corrected"]), optimism = unname(cm[, "mean.optimism"]),
  original = unname(cm[, "index.orig"]), training = unname(cm[, "training"]), test = unname(cm[, "test"]),
  n = unname(cm[, "n"]), indices = ik, surv_apparent = do.call(rbind, surv_app),
  surv_test = do.call(rbind, surv_test))
print(cc)

writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, matrix = "rowmajor"),
           "tests/internal/rms_validate.json")
print(vb); print(vs); print(vc); print(vsc)
