# Reference values for tests/stats, computed with R (pROC, survival, stats).
#
# Run from the repository root:
#   Rscript tests/stats/data/make_proc_reference.R
# Needs: r-base-core r-cran-proc r-cran-survival r-cran-jsonlite r-cran-cardata
# (Debian packages). Writes, into tests/stats/data/:
#   proc_reference.json         datasets + pROC AUC / DeLong / roc.test / coords / bootstrap CI,
#                               Wilson intervals from prop.test(correct = FALSE)
#   calibration_reference.json  dataset + glm calibration intercept/slope, Brier, loess ICI/E50/E90
#   survival_reference.json     coxph, survdiff and concordance on the Rossi data
#   rossi.csv                   the Rossi recidivism data (carData::Rossi), coded 0/1
# The tests read these files; they never need R.

suppressPackageStartupMessages({
  library(pROC)
  library(survival)
  library(jsonlite)
})

out_dir <- file.path("tests", "stats", "data")
versions <- list(
  R = R.version.string,
  pROC = as.character(packageVersion("pROC")),
  survival = as.character(packageVersion("survival"))
)

write_ref <- function(x, name) {
  writeLines(toJSON(x, digits = NA, auto_unbox = TRUE, pretty = TRUE),
             file.path(out_dir, name))
}

# ---------------------------------------------------------------- datasets
set.seed(1982)

correlated_pair <- function(n, prev, shift_a, shift_b, rho, digits) {
  y <- rbinom(n, 1, prev)
  y[1] <- 0
  y[2] <- 1
  z <- rnorm(n)
  e <- rnorm(n)
  a <- shift_a * y + z
  b <- shift_b * y + rho * z + sqrt(1 - rho^2) * e
  list(y = y, a = round(a, digits), b = round(b, digits))
}

datasets <- list()

# Hanley & McNeil (Radiology 1982;143:29-36), Table 1: five-point ratings.
hm_y <- c(rep(0, 58), rep(1, 51))
hm_a <- c(rep(1:5, c(33, 6, 6, 11, 2)), rep(1:5, c(3, 2, 2, 11, 33)))
hm_b <- pmin(5, pmax(1, hm_a + sample(c(-1, 0, 0, 1), length(hm_a), replace = TRUE)))
datasets$hanley_mcneil <- list(y = hm_y, a = hm_a, b = hm_b)

datasets$small_ties <- list(
  y = c(0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1),
  a = sample(1:4, 14, replace = TRUE),
  b = sample(1:4, 14, replace = TRUE)
)
datasets$medium_ties <- correlated_pair(200, 0.4, 0.9, 0.6, 0.5, 1)
datasets$continuous <- correlated_pair(500, 0.3, 1.2, 1.0, 0.7, 4)
datasets$imbalanced <- correlated_pair(1000, 0.05, 1.5, 1.3, 0.6, 3)
datasets$inverted <- correlated_pair(60, 0.5, -0.8, 0.3, 0.2, 2)
datasets$near_perfect <- correlated_pair(80, 0.5, 4.0, 3.5, 0.5, 2)

proc_one <- function(y, s, seed) {
  r <- roc(response = y, predictor = s, levels = c(0, 1), direction = "<", quiet = TRUE)
  ci95 <- ci.auc(r, conf.level = 0.95, method = "delong")
  ci90 <- ci.auc(r, conf.level = 0.90, method = "delong")
  best_y <- coords(r, "best", best.method = "youden", ret = "threshold", transpose = FALSE)
  best_t <- coords(r, "best", best.method = "closest.topleft", ret = "threshold", transpose = FALSE)
  set.seed(seed)
  boot <- ci.auc(r, conf.level = 0.95, method = "bootstrap", boot.n = 2000,
                 boot.stratified = TRUE, progress = "none")
  list(
    auc = as.numeric(auc(r)),
    var_delong = as.numeric(var(r, method = "delong")),
    ci95_delong = as.numeric(ci95)[c(1, 3)],
    ci90_delong = as.numeric(ci90)[c(1, 3)],
    youden = I(as.numeric(best_y$threshold)),
    closest_topleft = I(as.numeric(best_t$threshold)),
    boot_ci95 = as.numeric(boot)[c(1, 3)]
  )
}

proc <- list()
k <- 0
for (name in names(datasets)) {
  d <- datasets[[name]]
  k <- k + 1
  ra <- roc(response = d$y, predictor = d$a, levels = c(0, 1), direction = "<", quiet = TRUE)
  rb <- roc(response = d$y, predictor = d$b, levels = c(0, 1), direction = "<", quiet = TRUE)
  tst <- roc.test(ra, rb, method = "delong", paired = TRUE, conf.level = 0.95)
  set.seed(1000 + k)
  tboot <- roc.test(ra, rb, method = "bootstrap", paired = TRUE, boot.n = 2000,
                    boot.stratified = TRUE, progress = "none")
  proc[[name]] <- list(
    a = proc_one(d$y, d$a, 100 + k),
    b = proc_one(d$y, d$b, 200 + k),
    delong_test = list(
      z = as.numeric(tst$statistic),
      p = as.numeric(tst$p.value),
      ci95 = as.numeric(tst$conf.int),
      difference = as.numeric(tst$estimate[1] - tst$estimate[2])
    ),
    bootstrap_test = list(
      z = as.numeric(tboot$statistic),
      p = as.numeric(tboot$p.value)
    )
  )
}

# Wilson score intervals: prop.test without continuity correction.
wilson_cases <- list(c(81, 263), c(15, 148), c(0, 20), c(1, 29), c(29, 29), c(5, 7), c(50, 100))
wilson <- lapply(wilson_cases, function(xn) {
  list(
    x = xn[1], n = xn[2],
    ci95 = as.numeric(prop.test(xn[1], xn[2], conf.level = 0.95, correct = FALSE)$conf.int),
    ci90 = as.numeric(prop.test(xn[1], xn[2], conf.level = 0.90, correct = FALSE)$conf.int)
  )
})

write_ref(list(versions = versions, datasets = datasets, proc = proc, wilson = wilson),
          "proc_reference.json")

# ------------------------------------------------------------- calibration
set.seed(2019)
n <- 1000
x <- rnorm(n)
p_true <- plogis(-1 + x)
y <- rbinom(n, 1, p_true)
probs <- list(
  calibrated = round(p_true, 10),
  overfit = round(plogis(-1.2 + 1.8 * x), 10),
  underfit = round(plogis(-0.8 + 0.5 * x), 10)
)
calib <- lapply(probs, function(p) {
  lp <- qlogis(p)
  fit_int <- glm(y ~ 1, offset = lp, family = binomial)
  fit_slope <- glm(y ~ lp, family = binomial)
  lo_direct <- loess(y ~ p, span = 0.75, degree = 2,
                     control = loess.control(surface = "direct"))
  lo_default <- loess(y ~ p)
  err_direct <- abs(predict(lo_direct, newdata = data.frame(p = p)) - p)
  err_default <- abs(predict(lo_default, newdata = data.frame(p = p)) - p)
  list(
    intercept = unname(coef(fit_int)[1]),
    slope = unname(coef(fit_slope)[2]),
    slope_intercept = unname(coef(fit_slope)[1]),
    brier = mean((p - y)^2),
    loess_direct_head = I(as.numeric(predict(lo_direct, newdata = data.frame(p = p[1:20])))),
    ici = mean(err_direct),
    e50 = unname(median(err_direct)),
    e90 = unname(quantile(err_direct, 0.9)),
    emax = max(err_direct),
    ici_interpolate = mean(err_default)
  )
})
write_ref(list(versions = versions, y = y, prob = probs, calibration = calib),
          "calibration_reference.json")

# ---------------------------------------------------------------- survival
suppressPackageStartupMessages(library(carData))
rossi <- data.frame(
  week = Rossi$week,
  arrest = Rossi$arrest,
  fin = as.integer(Rossi$fin == "yes"),
  age = Rossi$age,
  race = as.integer(Rossi$race == "black"),
  wexp = as.integer(Rossi$wexp == "yes"),
  mar = as.integer(Rossi$mar == "married"),
  paro = as.integer(Rossi$paro == "yes"),
  prio = Rossi$prio
)
write.csv(rossi, file.path(out_dir, "rossi.csv"), row.names = FALSE)

rossi$risk <- round(0.3 * rossi$prio - 0.05 * rossi$age + 0.4 * (1 - rossi$fin), 2)
cx <- coxph(Surv(week, arrest) ~ prio + fin + age, data = rossi, ties = "efron")
cs <- summary(cx)
conc <- concordance(Surv(week, arrest) ~ risk, data = rossi, reverse = TRUE)
cut2 <- median(rossi$risk)
g2 <- as.integer(rossi$risk > cut2)
sd2 <- survdiff(Surv(week, arrest) ~ g2, data = rossi)
cut3 <- unname(quantile(rossi$risk, c(1 / 3, 2 / 3)))
g3 <- as.integer(rossi$risk > cut3[1]) + as.integer(rossi$risk > cut3[2])
sd3 <- survdiff(Surv(week, arrest) ~ g3, data = rossi)
km <- survfit(Surv(week, arrest) ~ g2, data = rossi)
km_s <- summary(km, times = c(10, 26, 52))

surv <- list(
  versions = versions,
  risk = rossi$risk,
  cox = list(
    terms = rownames(cs$coefficients),
    coef = unname(cs$coefficients[, "coef"]),
    se = unname(cs$coefficients[, "se(coef)"]),
    z = unname(cs$coefficients[, "z"]),
    p = unname(cs$coefficients[, "Pr(>|z|)"]),
    hr_low = unname(cs$conf.int[, "lower .95"]),
    hr_high = unname(cs$conf.int[, "upper .95"]),
    loglik = cx$loglik[2]
  ),
  concordance = list(
    c = unname(conc$concordance),
    counts = as.list(conc$count[c("concordant", "discordant", "tied.x", "tied.y", "tied.xy")])
  ),
  logrank2 = list(cut = cut2, chisq = unname(sd2$chisq), df = 1,
                  p = pchisq(sd2$chisq, 1, lower.tail = FALSE), n = as.numeric(sd2$n)),
  logrank3 = list(cut = cut3, chisq = unname(sd3$chisq), df = 2,
                  p = pchisq(sd3$chisq, 2, lower.tail = FALSE), n = as.numeric(sd3$n)),
  km2 = list(times = km_s$time, strata = as.character(km_s$strata),
             surv = km_s$surv, n_risk = km_s$n.risk)
)
write_ref(surv, "survival_reference.json")
cat("wrote reference files to", out_dir, "\n")
