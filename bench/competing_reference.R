# The reference analysis bench/competing.py compares cohortlab's competing-risk models and their validation
# with: riskRegression's CSC (cause-specific Cox, Efron ties) and FGR (Fine-Gray, cmprsk::crr), each model's
# predicted cumulative incidence of cause 1 at two horizons (predictRisk), and Score(cause = 1) of both
# models at those horizons (AUC(t), Brier(t) with the null model and IPA, their SEs and the contrasts).
#
#   Rscript bench/competing_reference.R patients.csv [repeats]
#
# Prints one JSON line: the best time of `repeats` runs of the analysis (reading the file and loading packages
# excluded), the results compared by bench/competing.py, and the package versions.
suppressPackageStartupMessages({
  library(survival)
  library(riskRegression)
  library(prodlim)
  library(cmprsk)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
repeats <- if (length(args) > 1) as.integer(args[2]) else 3L
d <- read.csv(args[1])
horizons <- c(2, 5)
analysis <- function(d) {
  csc <- CSC(Hist(time, status) ~ x1 + x2 + x3, data = d, cause = 1)
  fgr <- FGR(Hist(time, status) ~ x1 + x2 + x3, data = d, cause = 1)
  r_csc <- predictRisk(csc, newdata = d, times = horizons, cause = 1)
  r_fgr <- predictRisk(fgr, newdata = d, times = horizons)
  sc <- Score(list(csc = r_csc, fgr = r_fgr), formula = Hist(time, status) ~ 1, data = d, times = horizons,
              cause = 1, cens.model = "km", metrics = c("auc", "brier"), null.model = TRUE, se.fit = TRUE,
              conservative = FALSE, split.method = "none", summary = "ipa")
  list(csc_coef = unname(unlist(lapply(csc$models, coef))), fgr_coef = unname(fgr$crrFit$coef),
       auc = as.data.frame(sc$AUC$score)$AUC, brier = as.data.frame(sc$Brier$score)$Brier,
       risk_csc = unname(r_csc[1:5, ]), risk_fgr = unname(r_fgr[1:5, ]))
}
best <- Inf
for (i in seq_len(repeats)) {
  t0 <- proc.time()[["elapsed"]]
  res <- analysis(d)
  best <- min(best, proc.time()[["elapsed"]] - t0)
}
versions <- list(R = R.version.string, survival = as.character(packageVersion("survival")),
                 riskRegression = as.character(packageVersion("riskRegression")),
                 cmprsk = as.character(packageVersion("cmprsk")))
cat(toJSON(list(seconds = best, result = res, versions = versions), digits = NA, auto_unbox = TRUE,
           matrix = "rowmajor"), "\n")
