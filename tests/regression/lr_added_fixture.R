# Likelihood-ratio tests of added value through a study (test_clinical_only_run.py), on survival::nwtco
# (nwtco.csv, written by regression_fixture.R): a 4-level factor and a restricted cubic spline added to a
# maximum-likelihood logistic model (and a linear term replaced by its spline), as anova(glm_old, glm_new, test = "LRT") reports them.
# Run from tests/regression: Rscript lr_added_fixture.R  (writes lr_added_fixture.json)
suppressPackageStartupMessages({ library(rms); library(jsonlite) })
d <- read.csv("nwtco.csv")
d$histol <- factor(d$histol)
d$stage <- factor(d$stage)
lrt <- function(small, big) {
  a <- anova(small, big, test = "LRT")
  list(deviance_reduced = deviance(small), deviance_full = deviance(big), statistic = a$Deviance[2],
       df = as.integer(a$Df[2]), p = a$`Pr(>Chi)`[2])
}
histol <- glm(rel ~ histol, family = binomial, data = d)
staged <- glm(rel ~ histol + stage, family = binomial, data = d)
spline <- glm(rel ~ histol + stage + rcs(age, 4), family = binomial, data = d)
linear <- glm(rel ~ histol + stage + age, family = binomial, data = d)
out <- list(
  data = "nwtco.csv (survival::nwtco; every child a training patient)",
  versions = list(r = R.version.string, rms = as.character(packageVersion("rms")),
                  stats = as.character(packageVersion("stats"))),
  factor = c(list(old = "histol", new = "histol + stage"), lrt(histol, staged)),
  spline = c(list(old = "histol + stage", new = "histol + stage + rcs(age, 4)"), lrt(staged, spline)),
  # age entered linearly is nested in its spline (the basis holds age itself): k - 2 = 2 added parameters
  linear_to_spline = c(list(old = "histol + stage + age", new = "histol + stage + rcs(age, 4)"), lrt(linear, spline))
)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "lr_added_fixture.json")
