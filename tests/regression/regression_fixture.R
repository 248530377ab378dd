# Reference fits for analytics.models.glm and analytics.stats.coefficients (issue 23), on survival::nwtco
# (4,028 children of two National Wilms Tumor Study trials; public, shipped with R's survival package).
# Writes nwtco.csv (the data) and regression_fixture.json (fits, tables, rms::rcs bases, LR tests).
# Run from this folder: Rscript regression_fixture.R
suppressMessages({library(survival); library(rms); library(jsonlite)})

d <- nwtco[, c("seqno", "histol", "stage", "age", "study", "rel", "edrel")]
write.csv(d, "nwtco.csv", row.names = FALSE)
d$histol <- factor(d$histol)  # 1 favourable (reference), 2 unfavourable
d$stage <- factor(d$stage)    # 1 (reference) .. 4

num <- function(x) unname(as.numeric(x))
mat <- function(m) unname(lapply(seq_len(nrow(m)), function(i) as.numeric(m[i, ])))

glm_fit <- function(f) {
  s <- summary(f)$coefficients
  ci <- confint.default(f)
  list(names = rownames(s), estimate = num(s[, 1]), se = num(s[, 2]), z = num(s[, 3]), p = num(s[, 4]),
       ci_low = num(ci[, 1]), ci_high = num(ci[, 2]), vcov = mat(vcov(f)), loglik = as.numeric(logLik(f)),
       aic = AIC(f), deviance = deviance(f), null_deviance = f$null.deviance, df_residual = f$df.residual,
       df_null = f$df.null, n = nobs(f), events = sum(f$y), iter = f$iter,
       column_sums = num(colSums(model.matrix(f))))
}
full <- rel ~ histol + stage + rcs(age, 4) + histol:stage
g <- glm(full, family = binomial, data = d)
g_tight <- glm(full, family = binomial, data = d, control = glm.control(epsilon = 1e-15, maxit = 100))
# numeric inputs only (histol and stage as numbers): the end-to-end pipeline test
g_numeric <- glm(rel ~ age + as.numeric(histol) + as.numeric(stage), family = binomial, data = d,
                 control = glm.control(epsilon = 1e-15, maxit = 100))

cox_fit <- function(f) {
  s <- summary(f)
  cf <- s$coefficients
  list(names = rownames(cf), estimate = num(cf[, "coef"]), hr = num(cf[, "exp(coef)"]), se = num(cf[, "se(coef)"]),
       z = num(cf[, "z"]), p = num(cf[, "Pr(>|z|)"]), hr_low = num(s$conf.int[, "lower .95"]),
       hr_high = num(s$conf.int[, "upper .95"]), vcov = mat(vcov(f)), loglik_null = f$loglik[1],
       loglik = f$loglik[2], aic = AIC(f), lr_statistic = num(s$logtest["test"]), lr_df = num(s$logtest["df"]),
       lr_p = num(s$logtest["pvalue"]), n = f$n, events = f$nevent)
}
cx <- coxph(Surv(edrel, rel) ~ histol + stage + rcs(age, 4) + histol:stage, data = d, ties = "efron")

anova_rows <- function(a) list(rows = rownames(a), chisq = num(a[, "Chi-Square"]), df = num(a[, "d.f."]),
                                p = num(a[, "P"]))
rms_fit <- function(f) c(list(names = names(coef(f)), estimate = num(coef(f)), vcov = mat(vcov(f))),
                         list(anova = anova_rows(anova(f))))
l_full <- lrm(rel ~ histol * stage + rcs(age, 4), data = d)
l_nlia <- lrm(rel ~ histol * rcs(age, 4) + stage, data = d)  # a spline in an interaction: nonlinear-interaction rows
# two interactions, one with a spline: TOTAL NONLINEAR, TOTAL INTERACTION and TOTAL NONLINEAR + INTERACTION rows
l_two <- lrm(rel ~ histol * stage + histol * rcs(age, 4) + study, data = d)
c_full <- cph(Surv(edrel, rel) ~ histol * stage + rcs(age, 4), data = d)
c_tight <- cph(Surv(edrel, rel) ~ histol * stage + rcs(age, 4), data = d, eps = 1e-12, tol = 1e-14)

lrt <- function(small, big) {
  a <- anova(small, big, test = "LRT")
  list(deviance_reduced = deviance(small), deviance_full = deviance(big), statistic = a$Deviance[2],
       df = as.integer(a$Df[2]), p = a$`Pr(>Chi)`[2])
}
base <- glm(rel ~ histol + age, family = binomial, data = d)
with_stage <- glm(rel ~ histol + age + stage, family = binomial, data = d)
with_spline <- glm(rel ~ histol + stage + rcs(age, 4), family = binomial, data = d)

ages <- sort(unique(d$age))
rcs_k <- function(k) {
  age <- d$age
  b <- rcs(age, k)
  at <- match(ages, age)
  list(k = k, knots = num(attr(b, "parms")), names = colnames(b), basis = mat(unclass(b)[at, , drop = FALSE]))
}

out <- list(
  data = "nwtco.csv (survival::nwtco: seqno, histol, stage, age in months, study, rel, edrel in days)",
  versions = list(r = R.version.string, survival = as.character(packageVersion("survival")),
                  rms = as.character(packageVersion("rms")), Hmisc = as.character(packageVersion("Hmisc")),
                  stats = as.character(packageVersion("stats"))),
  formula = "rel ~ histol + stage + rcs(age, 4) + histol:stage (histol, stage factors; first level reference)",
  glm = glm_fit(g), glm_tight = glm_fit(g_tight), glm_numeric = glm_fit(g_numeric),
  coxph = cox_fit(cx),
  lrm = c(rms_fit(l_full), list(lr_statistic = num(l_full$stats["Model L.R."]), lr_df = num(l_full$stats["d.f."]))),
  lrm_nonlinear_interaction = rms_fit(l_nlia), lrm_two_interactions = rms_fit(l_two),
  cph = rms_fit(c_full), cph_tight = rms_fit(c_tight),
  lr_factor = lrt(base, with_stage), lr_spline = lrt(with_stage, with_spline),
  rcs = list(variable = "age", x = ages, k3 = rcs_k(3), k4 = rcs_k(4), k5 = rcs_k(5))
)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = FALSE), "regression_fixture.json")
