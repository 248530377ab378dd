# Reference values for Harrell's C with the infinitesimal-jackknife standard error
# (analytics.stats.concordance(..., interval = "ij")): R survival::concordance, timewt = "n", whose
# variance is the infinitesimal jackknife of Somers' d (Therneau & Atkinson, "Concordance", vignette of R
# survival), with a higher risk meaning a shorter survival (reverse = TRUE).
#
#   Rscript tests/stats/harrell_ij_fixture.R    (from the repository root; needs R and survival)
#
# Writes beside this script harrell_ij_fixture.json: for each case its data (time, event, risk; times and
# risks rounded so that they tie, and are exact in binary after the round trip through JSON), the
# truncation time (R ymax; null for none), R's concordance, its variance and pair counts, and the R and
# survival versions.
library(survival)
library(jsonlite)

here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))))

one <- function(time, event, risk, ymax = NULL) {
  fit <- concordance(Surv(time, event) ~ risk, reverse = TRUE, ymax = ymax)
  list(time = time, event = event, risk = risk, tau = if (is.null(ymax)) NA else ymax,
       concordance = unname(fit$concordance), var = unname(fit$var),
       counts = as.list(fit$count[c("concordant", "discordant", "tied.x", "tied.y", "tied.xy")]))
}

set.seed(20240611)
cases <- list()
# ties in time (half-unit grid) and in risk (one decimal)
n <- 400
x <- rnorm(n)
time <- round(2 * rexp(n, exp(0.7 * x)), 0) / 2 + 0.5
cens <- round(2 * rexp(n, 0.3), 0) / 2 + 0.5
event <- as.integer(time <= cens)
time <- pmin(time, cens)
risk <- round(x + rnorm(n, sd = 0.5), 1)
cases$tied <- one(time, event, risk)
cases$tied_tau <- one(time, event, risk, ymax = 2)
# no ties, many events
n <- 250
x <- rnorm(n)
time <- round(rexp(n, exp(x)), 6) + 1e-3 * seq_len(n)
event <- rbinom(n, 1, 0.8)
risk <- round(x + rnorm(n), 6)
cases$distinct <- one(time, event, risk)
# the Rossi recidivism data (tests/stats/data/rossi.csv), risk as in make_proc_reference.R
rossi <- read.csv(file.path(here, "data", "rossi.csv"))
rossi$risk <- round(0.3 * rossi$prio - 0.05 * rossi$age + 0.4 * (1 - rossi$fin), 2)
cases$rossi <- one(rossi$week, rossi$arrest, rossi$risk)

out <- list(versions = list(R = R.version.string, survival = as.character(packageVersion("survival"))),
            cases = cases)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, na = "null"), file.path(here, "harrell_ij_fixture.json"))
cat("wrote", file.path(here, "harrell_ij_fixture.json"), "\n")
