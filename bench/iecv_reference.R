# The reference analysis bench/iecv.py compares cohortlab's internal-external cross-validation with: a glm
# left-out-centre loop as a user of R would write it (glm, pROC's AUC and DeLong variance, calibration from
# glm, O:E), then metafor's REML / Knapp-Hartung meta-analysis of each measure with its prediction interval.
#
#   Rscript bench/iecv_reference.R patients.csv [repeats]
#
# Prints one JSON line: the best time (elapsed and CPU) of `repeats` runs of the analysis (reading the file and loading packages
# excluded), the pooled results, and the package versions.
suppressPackageStartupMessages({
  library(pROC)
  library(metafor)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
repeats <- if (length(args) > 1) as.integer(args[2]) else 3L
d <- read.csv(args[1])
analysis <- function(d) {
  centres <- sort(unique(d$center))
  per <- lapply(centres, function(cc) {
    fit <- glm(label ~ age + marker, family = binomial, data = d[d$center != cc, ])
    te <- d[d$center == cc, ]
    lp <- predict(fit, newdata = te)
    r <- roc(te$label, lp, levels = c(0, 1), direction = "<", quiet = TRUE)
    citl <- glm(label ~ offset(lp), family = binomial, data = cbind(te, lp = lp))
    slope <- glm(label ~ lp, family = binomial, data = cbind(te, lp = lp))
    O <- sum(te$label); E <- sum(plogis(lp)); N <- nrow(te)
    c(auc = as.numeric(auc(r)), auc_var = var(r, method = "delong"), citl = unname(coef(citl)[1]),
      citl_var = vcov(citl)[1, 1], slope = unname(coef(slope)[2]), slope_var = vcov(slope)[2, 2],
      log_oe = log(O / E), log_oe_var = 1 / O - 1 / N)
  })
  m <- do.call(rbind, per)
  pool <- function(yi, vi) {
    fit <- rma(yi, vi, method = "REML", test = "knha")
    pr <- predict(fit)
    c(mu = as.numeric(fit$b), ci_lb = fit$ci.lb, ci_ub = fit$ci.ub, tau2 = fit$tau2, pi_lb = pr$pi.lb, pi_ub = pr$pi.ub)
  }
  list(auc = pool(qlogis(m[, "auc"]), m[, "auc_var"] / (m[, "auc"] * (1 - m[, "auc"]))^2),
       citl = pool(m[, "citl"], m[, "citl_var"]), slope = pool(m[, "slope"], m[, "slope_var"]),
       oe = pool(m[, "log_oe"], m[, "log_oe_var"]))
}
best <- Inf
best_cpu <- Inf
for (i in seq_len(repeats)) {
  t0 <- proc.time()
  res <- analysis(d)
  t1 <- proc.time()
  best <- min(best, t1[["elapsed"]] - t0[["elapsed"]])
  best_cpu <- min(best_cpu, sum((t1 - t0)[c("user.self", "sys.self")]))
}
cat(toJSON(list(
  patients = nrow(d), seconds = best, cpu_seconds = best_cpu, pooled = lapply(res, as.list),
  versions = list(R = paste(R.version$major, R.version$minor, sep = "."), pROC = as.character(packageVersion("pROC")),
                  metafor = as.character(packageVersion("metafor")))
), auto_unbox = TRUE, digits = NA), "\n")
