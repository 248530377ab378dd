# Reference values for tests/formula: rms::rcs knots and basis, R's model.matrix of formulas with factors,
# splines and interactions, and glm / coxph predictions of formula models, on survival::nwtco (National Wilms
# Tumor Study: 4,028 children of two trials, study 3 and study 4).
# Run from the repository root:  Rscript tests/formula/formula_fixture.R
# Writes tests/formula/formula_fixture.json; the tests read it and never need R.
suppressPackageStartupMessages({
  library(survival)
  library(rms)
  library(jsonlite)
})

num <- function(x) unname(as.numeric(x))
cols <- function(m) lapply(seq_len(ncol(m)), function(j) num(m[, j]))

# --- rms::rcs knots and basis (norm = 2, inclx = TRUE) ----------------------------------------------
# x: the values (left out for nwtco's age, which `data` holds); rows: the basis rows kept (0-based)
rcs_case <- function(x, k, rows = seq_along(x), keep_x = TRUE) {
  b <- rcs(x, k)
  list(k = k, n = length(x), x = if (keep_x) num(x) else NULL, knots = num(attr(b, "parms")), rows = rows - 1L,
       basis = cols(unclass(b)[rows, , drop = FALSE]))
}
age <- nwtco$age
rcs_cases <- list(
  full3 = rcs_case(age, 3, 1:200, FALSE), full4 = rcs_case(age, 4, 1:200, FALSE),
  full5 = rcs_case(age, 5, 1:200, FALSE), full6 = rcs_case(age, 6, 1:200, FALSE), full7 = rcs_case(age, 7, 1:200, FALSE),
  # fewer than 100 values: the outer knots are the 5th smallest and 5th largest values
  small3 = rcs_case(age[1:60], 3), small4 = rcs_case(age[1:60], 4), small5 = rcs_case(age[1:60], 5),
  # a value shared by >= 5% of the patients at the low end (Hmisc's fractied rule moves the first knot)
  tied4 = rcs_case(pmax(age[1:500], 12), 4)
)
# the basis of new values at knots learned elsewhere (held-out rows)
k4 <- attr(rcs(age, 4), "parms")
new_x <- c(-5, 0, 7.5, 30, 61, 150, 400)
rcs_new <- list(knots = num(k4), x = new_x, basis = cols(rcspline.eval(new_x, knots = k4, inclx = TRUE)))

# --- model matrices ------------------------------------------------------------------------------
d <- nwtco
d$histol <- factor(ifelse(d$histol == 1, "FH", "UH"), levels = c("FH", "UH"))
d$stage <- factor(c("I", "II", "III", "IV")[d$stage], levels = c("I", "II", "III", "IV"))
shown <- 1:150
mm <- function(formula, ours) {
  m <- model.matrix(formula, d)
  keep <- colnames(m) != "(Intercept)"
  list(formula = ours, names = colnames(m)[keep], values = cols(m[shown, keep, drop = FALSE]),
       assign = attr(m, "assign")[keep])
}
matrices <- list(
  mm(~ histol + stage + rcs(age, 4) + histol:stage, "histol + stage + rcs(age, 4) + histol:stage"),
  mm(~ stage * histol, "stage * histol"),
  mm(~ relevel(stage, "III") + histol, "C(stage, ref = \"III\") + histol"),
  mm(~ histol + histol:stage, "histol + histol:stage"),
  mm(~ rcs(age, 3) * histol, "rcs(age, 3) * histol"),
  mm(~ age + stage:histol + histol, "age + stage:histol + histol")
)

# --- fitted models: development = study 3, validation = study 4 -----------------------------------
dev <- d[d$study == 3, ]
val <- d[d$study == 4, ]
logit <- glm(rel ~ histol + stage + rcs(age, 4) + histol:stage, family = binomial, data = dev,
             control = glm.control(epsilon = 1e-14, maxit = 100))
cox <- coxph(Surv(edrel, rel) ~ histol + stage + rcs(age, 4), data = dev, ties = "efron",
             control = coxph.control(eps = 1e-12, toler.chol = 1e-15, iter.max = 100))
# clinical = ["histol", "stage", "age"] without a formula: main effects, treatment-coded
logit_main <- glm(rel ~ histol + stage + age, family = binomial, data = dev,
                  control = glm.control(epsilon = 1e-14, maxit = 100))
cox_main <- coxph(Surv(edrel, rel) ~ histol + stage + age, data = dev, ties = "efron",
                  control = coxph.control(eps = 1e-12, toler.chol = 1e-15, iter.max = 100))
models <- list(
  logistic_main = list(clinical = c("histol", "stage", "age"), coef = as.list(coef(logit_main)),
                       predicted = num(predict(logit_main, newdata = val, type = "response"))),
  cox_main = list(clinical = c("histol", "stage", "age"), coef = as.list(coef(cox_main)),
                  lp = num(predict(cox_main, newdata = val, type = "lp"))),
  logistic = list(formula = "histol + stage + rcs(age, 4) + histol:stage", coef = as.list(coef(logit)),
                  predicted = num(predict(logit, newdata = val, type = "response"))),
  cox = list(formula = "histol + stage + rcs(age, 4)", coef = as.list(coef(cox)),
             lp = num(predict(cox, newdata = val, type = "lp")))
)

out <- list(
  r_version = R.version.string, survival = as.character(packageVersion("survival")),
  rms = as.character(packageVersion("rms")), Hmisc = as.character(packageVersion("Hmisc")),
  data = list(seqno = d$seqno, age = num(d$age), histol = as.character(d$histol), stage = as.character(d$stage),
              study = d$study, rel = d$rel, edrel = num(d$edrel)),
  shown_rows = shown - 1L, rcs = rcs_cases, rcs_new = rcs_new, matrices = matrices, models = models
)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = FALSE), "tests/formula/formula_fixture.json")
