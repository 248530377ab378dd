# Reference calibration values from rms::val.prob, for tests/stats/test_stats_calibration_rms.py.
#
# Run from the repository root (after make_proc_reference.R has written calibration_reference.json):
#   Rscript tests/stats/data/make_rms_reference.R
# Needs: r-base-core r-cran-rms r-cran-jsonlite (Debian packages). Writes
# tests/stats/data/rms_calibration_reference.json. The tests read that file; they never need R.
#
# Names as rms::val.prob reports them:
#   intercept, slope  val.prob's "Intercept" and "Slope": logistic recalibration,
#                     logit P(y = 1) = a + b * logit(p), fitted by lrm
#   citl              calibration-in-the-large: the intercept a of
#                     logit P(y = 1) = a + 1 * logit(p), i.e. glm(y ~ 1, offset = logit(p))
#   brier             val.prob's "Brier"

suppressPackageStartupMessages({
  library(rms)
  library(jsonlite)
})

data_dir <- file.path("tests", "stats", "data")
base <- fromJSON(file.path(data_dir, "calibration_reference.json"))

one <- function(p, y) {
  v <- val.prob(p, y, pl = FALSE)
  citl <- glm(y ~ 1, offset = qlogis(p), family = binomial)
  list(
    citl = unname(coef(citl)[1]),
    intercept = unname(v["Intercept"]),
    slope = unname(v["Slope"]),
    brier = unname(v["Brier"]),
    c = unname(v["C (ROC)"])
  )
}

datasets <- list()
for (kind in names(base$prob)) {
  datasets[[kind]] <- list(source = paste0("calibration_reference.json prob$", kind),
                           values = one(base$prob[[kind]], base$y))
}

# Two more: predictions systematically too high (miscalibrated in the large, slope near 1),
# and a small sample with few events.
set.seed(1958)
n <- 400
x <- rnorm(n)
y_shift <- rbinom(n, 1, plogis(-1.5 + x))
p_shift <- round(plogis(-0.5 + 0.9 * x), 10)
datasets$too_high <- list(y = y_shift, prob = p_shift, values = one(p_shift, y_shift))

n <- 60
x <- rnorm(n)
y_small <- rbinom(n, 1, plogis(-1.2 + 1.5 * x))
p_small <- round(plogis(-0.8 + 2.2 * x), 10)
datasets$small <- list(y = y_small, prob = p_small, values = one(p_small, y_small))

versions <- list(R = R.version.string, rms = as.character(packageVersion("rms")))
writeLines(toJSON(list(versions = versions, datasets = datasets), digits = NA, auto_unbox = TRUE, pretty = TRUE),
           file.path(data_dir, "rms_calibration_reference.json"))
