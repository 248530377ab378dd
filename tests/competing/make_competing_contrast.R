# Reference values for tests/competing/test_competing_contrast.py: the added value of one
# competing-risk model over another, as riskRegression::Score's contrasts (paired influence
# functions), on survival::mgus2 as written by make_competing_reference.R (data/mgus2.csv;
# cause 1 progression, 2 death without progression, 0 censored).
#
# Run from the repository root, after make_competing_reference.R:
#   Rscript tests/competing/make_competing_contrast.R
# Needs: r-base-core r-cran-survival r-cran-riskregression r-cran-prodlim r-cran-jsonlite.
# Writes tests/competing/data/competing_contrast.json, with the R and package versions:
#   risk      the two models' predicted cumulative incidence of cause 1 at 60 and 120 months
#             (old: CSC ~ age + male; new: CSC ~ age + male + hgb), rounded to 1e-10
#   auc, brier  Score(list(old, new), Hist(etime, event) ~ 1, cause = 1, cens.model = "km",
#             null.model = TRUE, conservative = FALSE): every model's score, and the contrasts
#             (delta = model - reference, se, lower, upper, p) of each pair
# The tests read the JSON; they never need R.

suppressPackageStartupMessages({
  library(survival)
  library(riskRegression)
  library(prodlim)
  library(jsonlite)
})

out_dir <- file.path("tests", "competing", "data")
versions <- list(
  R = R.version.string,
  survival = as.character(packageVersion("survival")),
  riskRegression = as.character(packageVersion("riskRegression")),
  prodlim = as.character(packageVersion("prodlim"))
)
d <- read.csv(file.path(out_dir, "mgus2.csv"))
times <- c(60, 120)
old <- CSC(Hist(etime, event) ~ age + male, data = d, cause = 1)
new <- CSC(Hist(etime, event) ~ age + male + hgb, data = d, cause = 1)
r_old <- round(predictRisk(old, newdata = d, times = times, cause = 1), 10)
r_new <- round(predictRisk(new, newdata = d, times = times, cause = 1), 10)
sc <- Score(list(old = r_old, new = r_new), formula = Hist(etime, event) ~ 1, data = d,
            times = times, cause = 1, cens.model = "km", metrics = c("auc", "brier"),
            null.model = TRUE, se.fit = TRUE, conservative = FALSE, split.method = "none")
tab <- function(x) {
  x <- as.data.frame(x)
  lapply(x, function(col) if (is.factor(col)) as.character(col) else col)
}
ref <- list(
  versions = versions, times = times,
  risk = list(old = unname(r_old), new = unname(r_new)),
  auc = list(score = tab(sc$AUC$score), contrasts = tab(sc$AUC$contrasts)),
  brier = list(score = tab(sc$Brier$score), contrasts = tab(sc$Brier$contrasts))
)
writeLines(toJSON(ref, digits = NA, auto_unbox = TRUE, matrix = "rowmajor"),
           file.path(out_dir, "competing_contrast.json"))
cat("written", file.path(out_dir, "competing_contrast.json"), "\n")
