# The reference analysis that bench/run_scale.py compares `cohortlab run` with (issue: registry-scale cohorts):
# one glm fitted on the development centre's patients and validated on the external centre's, as a user of R
# would: pROC's AUC with its DeLong CI and its stratified bootstrap CI (2,000 resamples), and rms::val.prob.
#
#   Rscript bench/run_scale_reference.R patients.csv [n_boot]
#
# Prints one JSON line: the seconds of each step, the total, the AUC and the package versions.
suppressPackageStartupMessages({
  library(pROC)
  library(rms)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
n_boot <- if (length(args) > 1) as.integer(args[2]) else 2000L
t0 <- proc.time()[["elapsed"]]
clock <- function() proc.time()[["elapsed"]] - t0
steps <- list()
d <- read.csv(args[1], stringsAsFactors = TRUE)
steps$read <- clock()
dev <- d[d$center == "A", ]
ext <- d[d$center == "B", ]
fit <- glm(label ~ age + marker + bmi + sex + stage, family = binomial, data = dev)
p <- predict(fit, newdata = ext, type = "response")
steps$fit <- clock()
r <- roc(ext$label, p, levels = c(0, 1), direction = "<", quiet = TRUE)
delong <- ci.auc(r, method = "delong")
steps$delong <- clock()
set.seed(1)
boot <- ci.auc(r, method = "bootstrap", boot.n = n_boot, boot.stratified = TRUE, progress = "none")
steps$bootstrap <- clock()
vp <- val.prob(p, ext$label, pl = FALSE)
steps$val_prob <- clock()
cat(toJSON(list(
  patients = nrow(d), steps = steps, total = clock(), auc = as.numeric(auc(r)),
  delong = as.numeric(delong), bootstrap = as.numeric(boot), c_index = unname(vp[["C (ROC)"]]),
  versions = list(R = paste(R.version$major, R.version$minor, sep = "."),
                  pROC = as.character(packageVersion("pROC")), rms = as.character(packageVersion("rms")))
), auto_unbox = TRUE, digits = NA), "\n")
