# References of the confidence intervals of predicted risks:
# - logistic: predict(glm, se.fit = TRUE) on the link scale, then plogis(fit -/+ qnorm(0.975) * se);
# - Cox: survfit(coxph, newdata, ctype = 1) (Breslow hazard, conf.type = "log") at times 50 and 80 (the study's
#   horizons; risk/lower/upper are at the first, by_horizon holds each).
# Reads ci_data.csv (the patients of predict_helpers.patients() with their split); writes ci_fixture.json.
# Run from this folder: Rscript ci_fixture.R
library(jsonlite)
library(survival)
d <- read.csv("ci_data.csv", stringsAsFactors = FALSE)
d$sex <- factor(d$sex, levels = c("F", "M"))
d$grade <- factor(d$grade, levels = c("low", "mid", "high"))
train <- d[d$split == "train", ]
# converged tightly, as the maximum-likelihood fit it is compared with (R stops at a deviance change of 1e-8)
fit <- glm(label ~ age + sex + grade, family = binomial, data = train, control = glm.control(epsilon = 1e-14, maxit = 100))
p <- predict(fit, newdata = d, type = "link", se.fit = TRUE)
z <- qnorm(0.975)
cox <- coxph(Surv(time, event) ~ age + sex + grade, data = train, ties = "efron",
             control = coxph.control(eps = 1e-12, iter.max = 100))
horizons <- c(50, 80)
sf <- summary(survfit(cox, newdata = d, ctype = 1, conf.type = "log"), times = horizons)
at <- function(j) list(risk = unname(1 - sf$surv[j, ]), lower = unname(1 - sf$upper[j, ]),
                       upper = unname(1 - sf$lower[j, ]))
by_horizon <- setNames(lapply(seq_along(horizons), at), as.character(horizons))
out <- list(
  versions = list(R = R.version.string, stats = as.character(packageVersion("stats")),
                  survival = as.character(packageVersion("survival")),
                  jsonlite = as.character(packageVersion("jsonlite"))),
  cox = list(coefficients = as.list(coef(cox)), lp = unname(predict(cox, newdata = d, type = "lp")),
             risk = unname(1 - sf$surv[1, ]), lower = unname(1 - sf$upper[1, ]), upper = unname(1 - sf$lower[1, ]),
             horizons = horizons, by_horizon = by_horizon),
  coefficients = as.list(coef(fit)),
  patient_id = d$patient_id,
  lp = unname(p$fit), se = unname(p$se.fit),
  risk = unname(plogis(p$fit)),
  lower = unname(plogis(p$fit - z * p$se.fit)), upper = unname(plogis(p$fit + z * p$se.fit))
)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE), "ci_fixture.json")
