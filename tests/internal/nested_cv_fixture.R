# Reference values for analytics.stats.nested_cv: the nested cross-validation interval of Bates,
# Hastie & Tibshirani (JASA 2024, Algorithm 1) for the AUC and the Brier score of a logistic glm,
# computed here independently of the Python code: R's folds, R's glm fits, the AUC's per-patient
# DeLong terms from brute-force placement values (checked against pROC), and the interval with the
# finite-sample choices of mlr3inferr's ci.ncv (MSE rescaled by (k-1)/k, SE kept within the
# independent / fully dependent bounds, bias (1 + (k-2)/k)(Err_NCV - Err_CV)).  The authors' package
# (github stephenbates19/nestedcv) is not on CRAN, so it is not run.  Run from the repository root:
#   Rscript tests/internal/nested_cv_fixture.R
suppressPackageStartupMessages({ library(jsonlite); library(pROC) })

# Binary: relapse in the National Wilms Tumor Study (survival::nwtco), a random 300 of 4,028.
set.seed(20261207)
d <- survival::nwtco[sort(sample(nrow(survival::nwtco), 300)), ]
X <- cbind(1, histol = d$histol - 1, stage = d$stage, age = d$age / 12)
y <- d$rel
n <- length(y); k <- 5; repeats <- 3

# stratified folds, one random split per repeat (0-based fold ids, as the Python plan)
folds <- t(sapply(seq_len(repeats), function(r) {
  f <- integer(n)
  for (cls in 0:1) {
    rows <- which(y == cls)
    f[rows] <- sample((seq_along(rows) - 1) %% k)
  }
  f
}))

fit_predict <- function(train) {
  b <- coef(glm.fit(X[train, ], y[train], family = binomial(), control = glm.control(epsilon = 1e-14, maxit = 100)))
  drop(plogis(X %*% b))
}
auc_terms <- function(yy, s) {
  cases <- s[yy == 1]; ctrls <- s[yy == 0]
  cmp <- outer(cases, ctrls, function(a, b) (a > b) + 0.5 * (a == b))
  v10 <- rowMeans(cmp); v01 <- colMeans(cmp)
  A <- mean(v10)
  stopifnot(abs(A - as.numeric(auc(roc(yy, s, levels = c(0, 1), direction = "<", quiet = TRUE)))) < 1e-12)
  out <- numeric(length(yy))
  out[yy == 1] <- A + length(yy) / length(cases) * (v10 - A)
  out[yy == 0] <- A + length(yy) / length(ctrls) * (v01 - A)
  out
}
terms <- list(AUC = auc_terms, Brier = function(yy, p) (yy - p)^2)

res <- list()
for (name in names(terms)) {
  loss <- terms[[name]]
  a_list <- c(); b_list <- c(); e_in_all <- c(); e_out_all <- c()
  for (r in seq_len(repeats)) {
    f <- folds[r, ]
    for (out in 0:(k - 1)) {
      p_out <- fit_predict(f != out)
      e_out <- loss(y[f == out], p_out[f == out])
      e_in <- c()
      for (j in setdiff(0:(k - 1), out)) {
        p_in <- fit_predict(f != out & f != j)
        e_in <- c(e_in, loss(y[f == j], p_in[f == j]))
      }
      a_list <- c(a_list, (mean(e_in) - mean(e_out))^2)
      b_list <- c(b_list, var(e_out) / length(e_out))
      e_in_all <- c(e_in_all, e_in); e_out_all <- c(e_out_all, e_out)
    }
  }
  err_ncv <- mean(e_in_all); err_cv <- mean(e_out_all)
  mse <- (k - 1) / k * mean(a_list - b_list)
  se_low <- sd(e_in_all) / sqrt(n)
  se <- max(se_low, min(sqrt(max(0, mse)), se_low * sqrt(k)))
  bias <- (1 + (k - 2) / k) * (err_ncv - err_cv)
  est <- err_ncv - bias
  z <- qnorm(0.975)
  res[[name]] <- list(estimate = est, low = est - z * se, high = est + z * se, se = se, cv = err_cv,
                      ncv = err_ncv, bias = bias, se_naive = se_low, mse = mse)
}

out <- list(R = R.version.string, pROC = as.character(packageVersion("pROC")),
            survival = as.character(packageVersion("survival")), k = k, repeats = repeats, level = 0.95,
            X = unname(X), y = y, folds = unname(folds), results = res)
write_json(out, "tests/internal/nested_cv.json", digits = NA, auto_unbox = TRUE, pretty = FALSE)
cat("wrote tests/internal/nested_cv.json\n")
str(res)
