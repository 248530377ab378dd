# Reference values for tests/competing/, computed with R on survival::mgus2
# (1,384 patients with monoclonal gammopathy, Mayo Clinic; Kyle et al., NEJM 2002):
# time to progression to a plasma-cell malignancy (cause 1) or death without
# progression (cause 2), in months, coded as in survival's "compete" vignette:
#   etime = ptime if progression else futime;  event = 1 progression, 2 death, 0 censored.
# Rows with a missing hgb are dropped (1,371 left); male = sex == "M".
#
# Run from the repository root:
#   Rscript tests/competing/make_competing_reference.R
# Needs: r-base-core r-cran-survival r-cran-cmprsk r-cran-riskregression
#        r-cran-prodlim r-cran-jsonlite (Debian packages).
# Writes into tests/competing/data/:
#   mgus2.csv                    id, etime, event, age, male, hgb
#   competing_reference.json     with the R and package versions:
#     aj        survfit(Surv(etime, factor(event)) ~ 1 and ~ male), summary at horizons:
#               pstate, std.err, lower, upper (conf.type = "log", the default)
#     cuminc    cmprsk::cuminc by male: timepoints() est and var; Tests (Gray)
#     csc       coxph (Efron) per cause: coef, se, loglik; predictRisk(CSC, cause = 1)
#     fgr       cmprsk::crr (via FGR): coef, se; predictRisk(FGR, cause = 1)
#     score     Score(list(csc = risks), Hist(etime, event) ~ 1, cause = 1,
#               cens.model = "km", metrics = c("auc", "brier"), null.model = TRUE)
#     pseudo    prodlim::jackknife pseudo-values of the AJ CIF at 120 months,
#               and R loess (surface = "direct") of them on cloglog(risk)
#     sim3      a simulated set with three causes, times tied on a half-unit grid
#               (sim3.csv; set.seed(2026)): survfit AJ, Gray's test for cause 2 by x2
#               stratified by strat with rho = 0.5, CSC (three causes) and FGR for
#               cause 2 with predictRisk, and Score(cause = 2) of the FGR risks
# The tests read these files; they never need R.

suppressPackageStartupMessages({
  library(survival)
  library(cmprsk)
  library(riskRegression)
  library(prodlim)
  library(jsonlite)
})

out_dir <- file.path("tests", "competing", "data")
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)
versions <- list(
  R = R.version.string,
  survival = as.character(packageVersion("survival")),
  cmprsk = as.character(packageVersion("cmprsk")),
  riskRegression = as.character(packageVersion("riskRegression")),
  prodlim = as.character(packageVersion("prodlim"))
)

data(cancer, package = "survival")
d <- mgus2[!is.na(mgus2$hgb), ]
d$etime <- ifelse(d$pstat == 0, d$futime, d$ptime)
d$event <- ifelse(d$pstat == 0, 2 * d$death, 1)
d$male <- as.integer(d$sex == "M")
d <- d[, c("id", "etime", "event", "age", "male", "hgb")]
rownames(d) <- NULL
write.csv(d, file.path(out_dir, "mgus2.csv"), row.names = FALSE)

horizons <- c(60, 120, 240)

# ---------------------------------------------------------------- Aalen-Johansen
aj_summary <- function(fit, at = horizons) {
  s <- summary(fit, times = at, extend = TRUE)
  strata <- if (is.null(s$strata)) rep("all", length(s$time)) else as.character(s$strata)
  list(strata = strata, time = s$time, states = s$states,
       pstate = unname(s$pstate), std_err = unname(s$std.err),
       lower = unname(s$lower), upper = unname(s$upper))
}
aj_all <- aj_summary(survfit(Surv(etime, factor(event)) ~ 1, data = d))
aj_male <- aj_summary(survfit(Surv(etime, factor(event)) ~ male, data = d))

ci <- cuminc(d$etime, d$event, group = d$male)
tp <- timepoints(ci, horizons)
cuminc_ref <- list(names = rownames(tp$est), est = unname(tp$est), var = unname(tp$var),
                   tests = list(stat = unname(ci$Tests[, "stat"]), pv = unname(ci$Tests[, "pv"]),
                                df = unname(ci$Tests[, "df"])))
# Gray's test with three groups (age tertiles) and rho = 1.
d$agegrp <- cut(d$age, quantile(d$age, c(0, 1 / 3, 2 / 3, 1)), include.lowest = TRUE, labels = FALSE)
ci3 <- cuminc(d$etime, d$event, group = d$agegrp, rho = 1)
gray3 <- list(group = d$agegrp, rho = 1, stat = unname(ci3$Tests[, "stat"]),
              pv = unname(ci3$Tests[, "pv"]), df = unname(ci3$Tests[, "df"]))

# ----------------------------------------------------------- cause-specific Cox
csc <- CSC(Hist(etime, event) ~ age + male + hgb, data = d, cause = 1)
cox_ref <- lapply(csc$models, function(m) list(coef = unname(coef(m)), se = unname(sqrt(diag(vcov(m)))),
                                                loglik = unname(m$loglik)))
names(cox_ref) <- paste0("cause", names(csc$models))
newd <- d[c(1, 2, 3, 50, 100, 500, 1000, 1371), ]
csc_risk <- predictRisk(csc, newdata = newd, times = horizons, cause = 1)
csc_risk2 <- predictRisk(csc, newdata = newd, times = horizons, cause = 2)

# ------------------------------------------------------------------ Fine-Gray
fgr <- FGR(Hist(etime, event) ~ age + male + hgb, data = d, cause = 1)
fg <- fgr$crrFit
fgr_risk <- predictRisk(fgr, newdata = newd, times = horizons)
fg_tight <- crr(d$etime, d$event, cov1 = as.matrix(d[, c("age", "male", "hgb")]),
                failcode = 1, cencode = 0, gtol = 1e-12, maxiter = 50)

# ------------------------------------------------------------------- Score
risk_all <- round(predictRisk(csc, newdata = d, times = c(60, 120), cause = 1), 10)
sc <- Score(list(csc = risk_all), formula = Hist(etime, event) ~ 1, data = d,
            times = c(60, 120), cause = 1, cens.model = "km", metrics = c("auc", "brier"),
            null.model = TRUE, se.fit = TRUE, conservative = FALSE, split.method = "none",
            summary = "ipa")
auc <- as.data.frame(sc$AUC$score)
br <- as.data.frame(sc$Brier$score)
score_ref <- list(times = c(60, 120), risk = risk_all,
                  auc = list(model = as.character(auc$model), times = auc$times, estimate = auc$AUC,
                             se = auc$se, lower = auc$lower, upper = auc$upper),
                  brier = list(model = as.character(br$model), times = br$times, estimate = br$Brier,
                               se = br$se, lower = br$lower, upper = br$upper, ipa = br$IPA))

# --------------------------------------------------- pseudo-values, loess
pfit <- prodlim(Hist(etime, event) ~ 1, data = d)
pv <- as.vector(jackknife(pfit, times = 120, cause = 1))
p120 <- risk_all[, 2]
cll <- log(-log(1 - p120))
lo <- loess(pv ~ cll, span = 0.75, degree = 2, control = loess.control(surface = "direct"))
pseudo_ref <- list(t = 120, pseudo = pv, cll = cll, loess_fit = unname(fitted(lo)))

# -------------------------------------------- three causes, ties, cause 2
set.seed(2026)
n <- 300
x1 <- round(rnorm(n), 3)
x2 <- rbinom(n, 1, 0.4)
strat <- rbinom(n, 1, 0.5)
t1 <- rexp(n, 0.10 * exp(0.5 * x1))
t2 <- rexp(n, 0.05 * exp(-0.4 * x2 + 0.3 * x1))
t3 <- rexp(n, 0.03)
cz <- runif(n, 0, 15)
tm <- pmin(t1, t2, t3, cz)
st <- ifelse(tm == cz, 0, ifelse(tm == t1, 1, ifelse(tm == t2, 2, 3)))
s3 <- data.frame(time = ceiling(tm * 2) / 2, status = st, x1 = x1, x2 = x2, strat = strat)
write.csv(s3, file.path(out_dir, "sim3.csv"), row.names = FALSE)
h3 <- c(2, 5, 8)
aj3 <- aj_summary(survfit(Surv(time, factor(status)) ~ 1, data = s3), at = h3)
ci3s <- cuminc(s3$time, s3$status, group = s3$x2, strata = s3$strat, rho = 0.5)
csc3 <- CSC(Hist(time, status) ~ x1 + x2, data = s3, cause = 2)
csc3_ref <- lapply(csc3$models, function(m) list(coef = unname(coef(m)), se = unname(sqrt(diag(vcov(m))))))
names(csc3_ref) <- sub("Cause ", "cause", names(csc3$models))  # cause of interest first
fgr3 <- FGR(Hist(time, status) ~ x1 + x2, data = s3, cause = 2)
risk3 <- round(predictRisk(fgr3, newdata = s3, times = c(2, 5)), 10)
sc3 <- Score(list(fgr = risk3), formula = Hist(time, status) ~ 1, data = s3, times = c(2, 5),
             cause = 2, cens.model = "km", metrics = c("auc", "brier"), null.model = TRUE,
             se.fit = TRUE, conservative = FALSE, split.method = "none", summary = "ipa")
auc3 <- as.data.frame(sc3$AUC$score)
# riskRegression 2022.11.28 computes the AUC's influence function (getInfluenceCurve.AUC ->
# getIC0AUC) with cases "event == 1" and competing events "event == 2" by position in the
# states, whatever the cause: its SE is right only when the cause of interest is the first
# state and there is one competing state.  The SE reference is therefore Score on the
# same data recoded that way (cause 2 -> 1, causes 1 and 3 -> 2); estimates are unchanged.
s3r <- s3
s3r$status <- ifelse(s3$status == 2, 1, ifelse(s3$status == 0, 0, 2))
sc3r <- Score(list(fgr = risk3), formula = Hist(time, status) ~ 1, data = s3r, times = c(2, 5),
              cause = 1, cens.model = "km", metrics = "auc", null.model = FALSE,
              se.fit = TRUE, conservative = FALSE, split.method = "none")
auc3r <- as.data.frame(sc3r$AUC$score)
br3 <- as.data.frame(sc3$Brier$score)
sim3 <- list(
  horizons = h3, aj = aj3,
  gray = list(cause = 2, rho = 0.5, stat = unname(ci3s$Tests["2", "stat"]),
              pv = unname(ci3s$Tests["2", "pv"])),
  csc = list(models = csc3_ref,
             risk_cause2 = unname(predictRisk(csc3, newdata = s3[1:5, ], times = h3, cause = 2)),
             risk_cause3 = unname(predictRisk(csc3, newdata = s3[1:5, ], times = h3, cause = 3))),
  fgr = list(coef = unname(fgr3$crrFit$coef), se = unname(sqrt(diag(fgr3$crrFit$var))),
             risk = unname(predictRisk(fgr3, newdata = s3[1:5, ], times = h3))),
  score = list(times = c(2, 5), risk = risk3,
               auc = list(estimate = auc3$AUC, se_as_coded = auc3$se,
                          estimate_recoded = auc3r$AUC, se = auc3r$se),
               brier = list(model = as.character(br3$model), estimate = br3$Brier,
                            se = br3$se, ipa = br3$IPA))
)

ref <- list(
  versions = versions, horizons = horizons, n = nrow(d),
  aj_all = aj_all, aj_male = aj_male, cuminc = cuminc_ref, gray3 = gray3,
  csc = list(formula = "Hist(etime, event) ~ age + male + hgb", models = cox_ref,
             newdata_rows = c(1, 2, 3, 50, 100, 500, 1000, 1371),
             risk_cause1 = unname(csc_risk), risk_cause2 = unname(csc_risk2)),
  fgr = list(coef = unname(fg$coef), se = unname(sqrt(diag(fg$var))), loglik = fg$loglik,
             converged = fg$converged, risk = unname(fgr_risk),
             coef_tight = unname(fg_tight$coef), se_tight = unname(sqrt(diag(fg_tight$var)))),
  score = score_ref, pseudo = pseudo_ref, sim3 = sim3
)
writeLines(toJSON(ref, digits = NA, auto_unbox = TRUE, matrix = "rowmajor"),
           file.path(out_dir, "competing_reference.json"))
cat("written", file.path(out_dir, "competing_reference.json"), "\n")
