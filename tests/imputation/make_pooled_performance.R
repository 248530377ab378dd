# Writes pooled_performance.json, which tests/imputation/test_pooled_performance.py reads (the tests never need R):
# performance of a model pooled over multiple imputations (Wood, Royston & White, Biom J 2015;57:614-632).
#   binary  mice's imputations of survival::pbc (m = 5); a logistic glm of death fitted on the first 200
#           patients of each completion and predicting the other 112 (the validation split); per imputation the
#           AUC with its DeLong variance (pROC), the calibration intercept (offset logit) and slope with their glm
#           variances, the Brier score with var((p - y)^2) / n; pooled with mice::pool.scalar (large-sample,
#           n = Inf), the AUC on the logit scale (Marshall et al. 2009), CIs qbar +- qt(df) sqrt(t)
#   cox     the same imputations and split, a coxph fit of time to death on each; Harrell's C with its infinitesimal-
#           jackknife variance (survival::concordance), pooled on the logit scale
# Run from the repository root: Rscript tests/imputation/make_pooled_performance.R
suppressPackageStartupMessages({
  library(mice)
  library(survival)
  library(pROC)
  library(jsonlite)
})
out_dir <- "tests/imputation"
tight <- glm.control(epsilon = 1e-14, maxit = 100)
versions <- list(R = R.version.string, mice = as.character(packageVersion("mice")),
                 pROC = as.character(packageVersion("pROC")),
                 survival = as.character(packageVersion("survival")))

d <- survival::pbc[1:312, c("time", "status", "age", "bili", "albumin", "chol", "platelet", "copper")]
d$dead <- as.integer(d$status == 2)
d$status <- NULL
d$bili <- log(d$bili)
imp <- mice(d, m = 5, seed = 2027, print = FALSE)
m <- imp$m
dev <- 1:200
val <- 201:312
n <- length(val)

pooled <- function(q, u, back = identity) {
  p <- pool.scalar(q, u)
  crit <- qt(0.975, p$df)
  list(qhat = q, u = u, qbar = p$qbar, ubar = p$ubar, b = p$b, t = p$t, df = p$df, riv = p$r, fmi = p$fmi,
       estimate = back(p$qbar), low = back(p$qbar - crit * sqrt(p$t)), high = back(p$qbar + crit * sqrt(p$t)))
}

scores <- list(); lps <- list()
auc <- auc_var <- citl <- citl_var <- slope <- slope_var <- rint <- rint_var <- brier <- brier_var <- numeric(m)
conc <- conc_var <- numeric(m)
for (i in seq_len(m)) {
  ci <- complete(imp, i)
  fit <- glm(dead ~ age + bili + albumin + chol + platelet + copper, family = binomial, data = ci[dev, ],
             control = tight)
  vi <- ci[val, ]
  p <- as.numeric(predict(fit, newdata = vi, type = "response"))
  y <- vi$dead
  scores[[i]] <- p
  r <- roc(y, p, levels = c(0, 1), direction = "<", quiet = TRUE)
  auc[i] <- as.numeric(auc(r)); auc_var[i] <- var(r, method = "delong")
  lp <- qlogis(p)
  f0 <- glm(y ~ offset(lp), family = binomial, control = tight)
  citl[i] <- coef(f0)[1]; citl_var[i] <- vcov(f0)[1, 1]
  f1 <- glm(y ~ lp, family = binomial, control = tight)
  rint[i] <- coef(f1)[1]; rint_var[i] <- vcov(f1)[1, 1]
  slope[i] <- coef(f1)[2]; slope_var[i] <- vcov(f1)[2, 2]
  sq <- (p - y)^2
  brier[i] <- mean(sq); brier_var[i] <- var(sq) / n
  cox <- coxph(Surv(time, dead) ~ age + bili + albumin + chol + platelet + copper, data = ci[dev, ])
  lpc <- as.numeric(predict(cox, newdata = vi, type = "lp"))
  lps[[i]] <- lpc
  cc <- concordance(Surv(vi$time, vi$dead) ~ lpc, reverse = TRUE)
  conc[i] <- cc$concordance; conc_var[i] <- cc$var
}
out <- list(
  versions = versions, data = "survival::pbc[1:312, ]; fitted on rows 1-200, validated on 201-312", seed = 2027,
  m = m, n = n,
  formula = "dead ~ age + log(bili) + albumin + chol + platelet + copper",
  y = d$dead[val], time = d$time[val], event = d$dead[val], scores = scores, lps = lps,
  auc = c(pooled(qlogis(auc), auc_var / (auc * (1 - auc))^2, back = plogis), list(per = auc, per_var = auc_var)),
  in_the_large = pooled(citl, citl_var),
  recalibration_intercept = pooled(rint, rint_var),
  recalibration_slope = pooled(slope, slope_var),
  brier = pooled(brier, brier_var),
  c_index = c(pooled(qlogis(conc), conc_var / (conc * (1 - conc))^2, back = plogis),
              list(per = conc, per_var = conc_var))
)
write_json(out, file.path(out_dir, "pooled_performance.json"), digits = NA, auto_unbox = TRUE)
