# The missing-data scenario of bench/coverage.py (--missing) run with R mice, for comparison: the same
# logistic model and MAR deletion of 30% of x1, mice(m = 20, maxit = 10) with x1 imputed by `meth`,
# pool() and summary(conf.int = TRUE). Prints bias, empirical and mean model SE, coverage and its MCSE.
#   Rscript bench/coverage_missing_reference.R 300 pmm      (or norm)
suppressPackageStartupMessages(library(mice))
args <- commandArgs(TRUE); S <- as.integer(args[1]); meth <- args[2]
set.seed(2027)
beta <- c(-1, 0.7, 0.5, -0.5); n <- 500
# missingness intercept for 30%
big <- 2e5; x1 <- rnorm(big); x2 <- 0.5 * x1 + sqrt(0.75) * rnorm(big); x3 <- rbinom(big, 1, 0.4)
y <- rbinom(big, 1, plogis(beta[1] + beta[2] * x1 + beta[3] * x2 + beta[4] * x3))
cc <- uniroot(function(c) mean(plogis(c + y + x2)) - 0.3, c(-10, 10))$root
hit <- matrix(NA, S, 4); est <- matrix(NA, S, 4); se <- matrix(NA, S, 4)
t0 <- Sys.time()
for (s in 1:S) {
  x1 <- rnorm(n); x2 <- 0.5 * x1 + sqrt(0.75) * rnorm(n); x3 <- rbinom(n, 1, 0.4)
  y <- rbinom(n, 1, plogis(beta[1] + beta[2] * x1 + beta[3] * x2 + beta[4] * x3))
  miss <- runif(n) < plogis(cc + y + x2)
  d <- data.frame(x1 = ifelse(miss, NA, x1), x2 = x2, x3 = x3, y = y)
  imp <- mice(d, m = 20, maxit = 10, method = c(x1 = meth, x2 = "", x3 = "", y = ""), printFlag = FALSE)
  sm <- summary(pool(with(imp, glm(y ~ x1 + x2 + x3, family = binomial))), conf.int = TRUE)
  hit[s, ] <- sm[["2.5 %"]] <= beta & beta <= sm[["97.5 %"]]
  est[s, ] <- sm$estimate; se[s, ] <- sm$std.error
}
cat("mice", as.character(packageVersion("mice")), meth, "S =", S, "seconds", round(as.numeric(Sys.time() - t0, units = "secs")), "\n")
out <- data.frame(term = c("(Intercept)", "x1", "x2", "x3"), bias = round(colMeans(est) - beta, 4),
                  emp_se = round(apply(est, 2, sd), 4), model_se = round(colMeans(se), 4),
                  cover = round(100 * colMeans(hit), 1), cover_mcse = round(100 * sqrt(colMeans(hit) * (1 - colMeans(hit)) / S), 1))
print(out, row.names = FALSE)
