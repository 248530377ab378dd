# Writes the mice fixtures that tests/imputation reads (the tests never need R):
#   rubin_glm.json   mice's own imputations of survival::pbc (m = 5), pool() and summary() of a logistic
#                    glm of death, D1 of the stage factor and D3 of the model against one without stage
#   rubin_cox.json   mice's imputations of survival::lung (event + Nelson-Aalen hazard in the model),
#                    pool() and summary() of a coxph fit, D1 of (wt.loss, meal.cal)
#   mice_m100.json   pool() of the same glm on mice(pbc, m = 100): the reference for the tool's own engine
#   md_pattern.json  md.pattern() of nhanes2 and of the lung subset
# Run from the repository root: Rscript tests/imputation/make_fixtures.R
suppressPackageStartupMessages({
  library(mice)
  library(survival)
  library(jsonlite)
})
out_dir <- "tests/imputation"
# glm stops at a relative deviance change of 1e-8 and takes its covariance from the last iteration's weights; the
# fits here run to full convergence so that the tables are those of the maximum-likelihood estimates
tight <- glm.control(epsilon = 1e-14, maxit = 100)
versions <- list(R = R.version.string, mice = as.character(packageVersion("mice")),
                 mitml = as.character(packageVersion("mitml")),
                 survival = as.character(packageVersion("survival")))

pooled_table <- function(fit, dfcom = NULL) {
  p <- pool(fit, dfcom = dfcom)
  s <- summary(p, conf.int = TRUE)
  x <- p$pooled
  list(term = as.character(x$term), m = x$m, estimate = x$estimate, ubar = x$ubar, b = x$b, t = x$t,
       dfcom = x$dfcom, df = x$df, riv = x$riv, lambda = x$lambda, fmi = x$fmi,
       std_error = s$std.error, statistic = s$statistic, p_value = s$p.value,
       conf_low = s[["2.5 %"]], conf_high = s[["97.5 %"]])
}
anova_row <- function(a) {
  r <- a$result
  list(statistic = r[1], df1 = r[2], df2 = r[3], p = r[4], riv = r[5], dfcom = a$dfcom)
}
long <- function(imp) {
  d <- complete(imp, "long")
  d[] <- lapply(d, function(v) if (is.factor(v)) as.character(v) else v)
  d
}

# ---- logistic glm on survival::pbc (death by the end of follow-up) ---------------------------------
pbc2 <- survival::pbc[, c("status", "age", "sex", "bili", "albumin", "chol", "platelet", "ascites", "stage")]
pbc2$dead <- as.integer(pbc2$status == 2)
pbc2$status <- NULL
pbc2$bili <- log(pbc2$bili)
pbc2$ascites <- factor(pbc2$ascites, levels = 0:1, labels = c("no", "yes"))
pbc2$stage <- factor(pbc2$stage)
pbc2 <- pbc2[, c("dead", "age", "sex", "bili", "albumin", "chol", "platelet", "ascites", "stage")]
imp <- mice(pbc2, m = 5, seed = 20231, print = FALSE)
fit1 <- with(imp, glm(dead ~ age + sex + bili + albumin + chol + platelet + ascites + stage, family = binomial, control = tight))
fit0 <- with(imp, glm(dead ~ age + sex + bili + albumin + chol + platelet + ascites, family = binomial, control = tight))
glm_out <- list(versions = versions, data = "survival::pbc", seed = 20231,
                methods = as.list(imp$method),
                formula = "dead ~ age + sex + bili + albumin + chol + platelet + ascites + stage",
                reduced = "dead ~ age + sex + bili + albumin + chol + platelet + ascites",
                completed = long(imp), pool = pooled_table(fit1),
                D1 = anova_row(D1(fit1, fit0)), D3 = anova_row(D3(fit1, fit0)),
                D1_all = anova_row(D1(fit1)))
write_json(glm_out, file.path(out_dir, "rubin_glm.json"), digits = NA, auto_unbox = TRUE)

# ---- coxph on survival::lung ---------------------------------------------------------------------
lung2 <- survival::lung[, c("time", "status", "age", "sex", "ph.ecog", "ph.karno", "wt.loss", "meal.cal")]
lung2$status <- as.integer(lung2$status == 2)
lung2$H <- nelsonaalen(lung2, time, status)
pred <- make.predictorMatrix(lung2)
pred[, "time"] <- 0
imp_c <- mice(lung2, m = 5, seed = 7, predictorMatrix = pred, print = FALSE)
cfit1 <- with(imp_c, coxph(Surv(time, status) ~ age + sex + ph.karno + wt.loss + meal.cal))
cfit0 <- with(imp_c, coxph(Surv(time, status) ~ age + sex + ph.karno))
cox_out <- list(versions = versions, data = "survival::lung", seed = 7,
                formula = "Surv(time, status) ~ age + sex + ph.karno + wt.loss + meal.cal",
                reduced = "Surv(time, status) ~ age + sex + ph.karno",
                completed = long(imp_c), pool = pooled_table(cfit1), D1 = anova_row(D1(cfit1, cfit0)))
write_json(cox_out, file.path(out_dir, "rubin_cox.json"), digits = NA, auto_unbox = TRUE)

# ---- m = 100 reference for the tool's own chained equations (pmm, logreg, polyreg) --------------
imp100 <- mice(pbc2, m = 100, maxit = 10, seed = 4, print = FALSE)
fit100 <- with(imp100, glm(dead ~ age + sex + bili + albumin + chol + platelet + ascites + stage, family = binomial, control = tight))
m100 <- list(versions = versions, data = "survival::pbc", seed = 4, maxit = 10,
             formula = "dead ~ age + sex + bili + albumin + chol + platelet + ascites + stage",
             incomplete = lapply(pbc2, function(v) if (is.factor(v)) as.character(v) else v),
             pool = pooled_table(fit100))
write_json(m100, file.path(out_dir, "mice_m100.json"), digits = NA, auto_unbox = TRUE, na = "null")

# ---- md.pattern ----------------------------------------------------------------------------------
pat <- function(d) {
  p <- md.pattern(d, plot = FALSE)
  list(columns = colnames(p), rows = unname(lapply(seq_len(nrow(p)), function(i) unname(p[i, ]))),
       counts = rownames(p))
}
write_json(list(versions = versions, nhanes2 = pat(nhanes2), lung = pat(lung2[, -9])),
           file.path(out_dir, "md_pattern.json"), digits = NA, auto_unbox = TRUE)
