# Reference values for tests/stats/test_stats_added_value.py, computed with R (Hmisc, stats).
#
# Run from the repository root:
#   Rscript tests/stats/data/make_added_value_reference.R
# Needs: r-base-core r-cran-hmisc r-cran-mass r-cran-jsonlite (Debian packages). Writes, into
# tests/stats/data/:
#   birthwt.csv                  the low birth weight data (MASS::birthwt; Hosmer & Lemeshow), as shipped
#   added_value_reference.json   two nested glms on it, their fitted probabilities, Hmisc::improveProb
#                                (continuous NRI, categorical NRI, IDI), anova(test = "LRT"), and the
#                                C statistic to Cox-Snell R2 simulation (Riley, Van Calster & Collins,
#                                Stat Med 2021;40:859-864) for a few settings
# The tests read these files; they never need R.

suppressPackageStartupMessages({
  library(Hmisc)
  library(MASS)
  library(jsonlite)
})

out_dir <- file.path("tests", "stats", "data")
versions <- list(
  R = R.version.string,
  Hmisc = as.character(packageVersion("Hmisc")),
  MASS = as.character(packageVersion("MASS")),
  jsonlite = as.character(packageVersion("jsonlite"))
)

d <- birthwt[, c("low", "age", "lwt", "race", "smoke", "ptl", "ht", "ui")]
write.csv(d, file.path(out_dir, "birthwt.csv"), row.names = FALSE)

old <- glm(low ~ age + lwt, family = binomial, data = d)
new <- glm(low ~ age + lwt + factor(race) + smoke + ptl + ht + ui, family = binomial, data = d)
p_old <- unname(fitted(old))
p_new <- unname(fitted(new))
y <- d$low

as_list <- function(ip) {
  x <- unclass(ip)
  lapply(x, function(v) unname(as.numeric(v)))
}

# continuous NRI and IDI
cont <- as_list(improveProb(p_old, p_new, y))

# categorical NRI: improveProb on the risk-group indices (a risk equal to a cut-off is in the higher
# group, findInterval), scaled into [0, 1]; improveProb counts a move up or down by the sign of the
# difference, so this is the categorical NRI of Pencina et al. (2008)
cutoffs <- c(0.2, 0.4)
g_old <- findInterval(p_old, cutoffs)
g_new <- findInterval(p_new, cutoffs)
cat_nri <- as_list(improveProb(g_old / length(cutoffs), g_new / length(cutoffs), y))
recl_events <- matrix(as.integer(table(factor(g_old[y == 1], 0:2), factor(g_new[y == 1], 0:2))), 3)
recl_nonevents <- matrix(as.integer(table(factor(g_old[y == 0], 0:2), factor(g_new[y == 0], 0:2))), 3)

lrt <- anova(old, new, test = "LRT")

# pmsampsize's cstatistic conversion, as published (seed 123456, n = 10^6)
cstat2rsq <- function(cstatistic, prevalence, seed = 123456) {
  n <- 1000000
  mu <- sqrt(2) * qnorm(cstatistic)
  set.seed(seed)
  LP <- c(rnorm(prevalence * n, mean = 0, sd = 1), rnorm((1 - prevalence) * n, mean = mu, sd = 1))
  yy <- c(rep(0, prevalence * n), rep(1, (1 - prevalence) * n))
  model <- glm(yy ~ LP, family = binomial)
  as.numeric(1 - exp(-1 * (model$null.deviance - model$deviance) / n))
}
r2 <- list(
  list(auc = 0.81, prevalence = 0.77, r2_cs = cstat2rsq(0.81, 0.77)),
  list(auc = 0.75, prevalence = 0.174, r2_cs = cstat2rsq(0.75, 0.174)),
  list(auc = 0.90, prevalence = 0.3, r2_cs = cstat2rsq(0.90, 0.3))
)

ref <- list(
  versions = versions,
  data = "birthwt.csv",
  old_formula = "low ~ age + lwt",
  new_formula = "low ~ age + lwt + factor(race) + smoke + ptl + ht + ui",
  p_old = p_old,
  p_new = p_new,
  continuous = cont,
  cutoffs = cutoffs,
  categorical = cat_nri,
  reclassification = list(events = recl_events, nonevents = recl_nonevents),
  lrt = list(statistic = lrt$Deviance[2], df = lrt$Df[2], p = lrt[["Pr(>Chi)"]][2],
             deviance_reduced = lrt[["Resid. Dev"]][1], deviance_full = lrt[["Resid. Dev"]][2]),
  r2_from_auc = r2
)
writeLines(toJSON(ref, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           file.path(out_dir, "added_value_reference.json"))
