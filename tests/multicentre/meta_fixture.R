# Fixture for tests/multicentre: random-effects meta-analysis (metafor), per-centre measures (pROC, glm) and
# model updating with the closed testing procedure (glm, anova) on a simulated multi-centre cohort.
# Run from this folder: Rscript meta_fixture.R  (writes meta_fixture.json)
suppressMessages({library(metafor); library(pROC); library(jsonlite); library(survival)})

meta <- function(yi, vi) {
  fit <- rma(yi, vi, method = "REML", test = "knha")
  pr <- predict(fit)
  k <- length(yi)
  riley <- as.numeric(fit$b) + c(-1, 1) * qt(0.975, k - 2) * sqrt(fit$tau2 + fit$se^2)
  list(mu = as.numeric(fit$b), se = fit$se, ci_lb = fit$ci.lb, ci_ub = fit$ci.ub, tau2 = fit$tau2, i2 = fit$I2,
       h2 = fit$H2, q = fit$QE, q_p = fit$QEp, pi_lb = pr$pi.lb, pi_ub = pr$pi.ub, riley_lb = riley[1],
       riley_ub = riley[2])
}

out <- list(versions = list(R = as.character(getRversion()), metafor = as.character(packageVersion("metafor")),
                            pROC = as.character(packageVersion("pROC"))))

# 1. metafor's dat.bcg: log risk ratios (escalc), all 13 trials and the first three
dat <- escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg)
dl <- rma(dat$yi, dat$vi, method = "DL", test = "knha")
out$bcg <- list(yi = as.numeric(dat$yi), vi = as.numeric(dat$vi), all = meta(dat$yi, dat$vi),
                dl = list(mu = as.numeric(dl$b), ci_lb = dl$ci.lb, ci_ub = dl$ci.ub, tau2 = dl$tau2),
                first3 = meta(dat$yi[1:3], dat$vi[1:3]))
# homogeneous centres: REML tau² at its bound 0
hy <- c(0.10, 0.12, 0.09, 0.11); hv <- c(0.04, 0.05, 0.03, 0.06)
out$homogeneous <- list(yi = hy, vi = hv, fit = meta(hy, hv))
# two centres: fixed effect
fe <- rma(c(0.2, 0.5), c(0.01, 0.02), method = "FE")
out$two <- list(yi = c(0.2, 0.5), vi = c(0.01, 0.02), mu = as.numeric(fe$b), se = fe$se, ci_lb = fe$ci.lb,
                ci_ub = fe$ci.ub, q = fe$QE)

# 2. a simulated cohort of five centres validating a published logistic model
set.seed(2029)
beta <- c(-1, 0.8, -0.5, 0.6)                     # the published model: intercept, x1, x2, x3
centres <- list(
  A = list(n = 300, shift = 0.0, slope = 1.0, b2 = -0.5),   # well calibrated
  B = list(n = 250, shift = 0.7, slope = 1.0, b2 = -0.5),   # under-predicts: calibration-in-the-large
  C = list(n = 400, shift = 0.3, slope = 0.5, b2 = -0.5),   # too extreme: logistic recalibration
  D = list(n = 350, shift = 0.0, slope = 1.0, b2 = 0.6),    # x2 acts differently: revision
  E = list(n = 200, shift = -0.4, slope = 1.2, b2 = -0.5))
rows <- list()
for (nm in names(centres)) {
  s <- centres[[nm]]
  x1 <- rnorm(s$n); x2 <- rbinom(s$n, 1, 0.4); x3 <- rnorm(s$n, 0.3, 1.2)
  lp <- beta[1] + beta[2] * x1 + beta[3] * x2 + beta[4] * x3
  true <- s$shift + s$slope * (beta[1] + beta[2] * x1 + s$b2 * x2 + beta[4] * x3)
  y <- rbinom(s$n, 1, plogis(true))
  rows[[nm]] <- data.frame(center = nm, x1 = x1, x2 = x2, x3 = x3, lp = lp, y = y)
}
d <- do.call(rbind, rows)
out$cohort <- list(beta = beta, center = d$center, x1 = d$x1, x2 = d$x2, x3 = d$x3, lp = d$lp, y = d$y)

# glm stops at a relative deviance change of 1e-8 and takes its SEs from the weights one step before the
# end: a tighter tolerance gives the maximum-likelihood values the tests compare with
tight <- glm.control(epsilon = 1e-14, maxit = 100)
per <- list()
upd <- list()
for (nm in names(centres)) {
  s <- d[d$center == nm, ]
  p <- plogis(s$lp)
  r <- roc(s$y, s$lp, direction = "<", levels = c(0, 1), quiet = TRUE)
  citl <- glm(y ~ offset(lp), family = binomial, data = s, control = tight)
  slope <- glm(y ~ lp, family = binomial, data = s, control = tight)
  O <- sum(s$y); E <- sum(p); N <- nrow(s)
  per[[nm]] <- list(n = N, events = O, auc = as.numeric(auc(r)), auc_var = var(r, method = "delong"),
                    citl = unname(coef(citl)[1]), citl_se = unname(sqrt(vcov(citl)[1, 1])),
                    slope = unname(coef(slope)[2]), slope_se = unname(sqrt(vcov(slope)[2, 2])),
                    oe = O / E, log_oe_var = 1 / O - 1 / N, brier = mean((p - s$y)^2))
  # model updating (Steyerberg 2009 ch. 20; Vergouwe et al. 2017): deviances, LR tests, closed test
  m1 <- glm(y ~ 0 + offset(lp), family = binomial, data = s, control = tight)
  m2 <- citl
  m3 <- slope
  m4 <- glm(y ~ x1 + x2 + x3, family = binomial, data = s, control = tight)
  dev <- c(deviance(m1), deviance(m2), deviance(m3), deviance(m4))
  lr <- function(a, b) { t <- anova(a, b, test = "LRT"); c(stat = t$Deviance[2], df = t$Df[2], p = t$`Pr(>Chi)`[2]) }
  t14 <- lr(m1, m4); t24 <- lr(m2, m4); t34 <- lr(m3, m4); t12 <- lr(m1, m2); t23 <- lr(m2, m3)
  choice <- if (t14["p"] >= 0.05) "original" else if (t24["p"] >= 0.05) "recalibration_in_the_large" else
    if (t34["p"] >= 0.05) "logistic_recalibration" else "revision"
  upd[[nm]] <- list(deviance = dev, lr14 = as.list(t14), lr24 = as.list(t24), lr34 = as.list(t34),
                    lr12 = as.list(t12), lr23 = as.list(t23), choice = choice,
                    citl = unname(coef(m2)), recal = unname(coef(m3)), revised = unname(coef(m4)))
}
out$centres <- per
out$updating <- upd
ms <- names(centres)
g <- function(f) sapply(ms, function(m) per[[m]][[f]])
out$meta <- list(
  auc = meta(qlogis(g("auc")), g("auc_var") / (g("auc") * (1 - g("auc")))^2),
  oe = meta(log(g("oe")), g("log_oe_var")),
  citl = meta(g("citl"), g("citl_se")^2),
  slope = meta(g("slope"), g("slope_se")^2))

# 3. a Cox model updated for a centre: baseline survival (offset lp) at horizons, slope, LR test of slope 1
set.seed(29)
n <- 300
x <- rnorm(n); lp <- 0.9 * x
tt <- rexp(n, 0.1 * exp(0.6 * x)); cc <- runif(n, 2, 15)
time <- pmin(tt, cc); status <- as.integer(tt <= cc)
hz <- c(3, 6, 9)
s0 <- function(f) summary(survfit(f, newdata = data.frame(lp = 0), ctype = 1), times = hz)$surv
off <- coxph(Surv(time, status) ~ offset(lp))
sl <- coxph(Surv(time, status) ~ lp)
sl_fixed <- coxph(Surv(time, status) ~ lp, init = 1, control = coxph.control(iter.max = 0))
out$cox <- list(time = time, status = status, lp = lp, horizons = hz,
                s0_offset = s0(off), slope = unname(coef(sl)), slope_se = unname(sqrt(vcov(sl)[1, 1])),
                s0_slope = s0(sl),
                lr_slope = 2 * (sl$loglik[2] - sl_fixed$loglik[1]))
km <- summary(survfit(Surv(time, status) ~ 1), times = hz)
out$cox$km_risk <- 1 - km$surv
out$cox$km_se <- km$std.err   # Greenwood SE of S(t), the SE of 1 - S(t) too
out$versions$survival <- as.character(packageVersion("survival"))

# 4. revision of a published model with a factor and an interaction (treatment coding, R's column names):
# glm(y ~ age + grp + marker + age:grp) on one centre, in the closed test with the three recalibrations
set.seed(31)
n <- 260
pub <- c("(Intercept)" = -1, age = 0.03, grpb = 0.4, grpc = -0.3, marker = 0.8, "age:grpb" = 0.01,
         "age:grpc" = -0.02)
rv <- data.frame(age = round(rnorm(n, 0, 10), 2), grp = factor(sample(c("a", "b", "c"), n, replace = TRUE)),
                 marker = round(rnorm(n), 4))
X <- model.matrix(~ age + grp + marker + age:grp, rv)
rv$lp <- as.numeric(X[, names(pub)] %*% pub)
rv$y <- rbinom(n, 1, plogis(0.3 + 0.8 * rv$lp - 0.9 * (rv$grp == "c") + 0.6 * rv$marker))
r1 <- glm(y ~ 0 + offset(lp), family = binomial, data = rv, control = tight)
r2 <- glm(y ~ offset(lp), family = binomial, data = rv, control = tight)
r3 <- glm(y ~ lp, family = binomial, data = rv, control = tight)
r4 <- glm(y ~ age + grp + marker + age:grp, family = binomial, data = rv, control = tight)
q14 <- lr(r1, r4); q24 <- lr(r2, r4); q34 <- lr(r3, r4)
out$revision <- list(
  formula = "age + grp + marker + age:grp", coefficients = as.list(pub), age = rv$age,
  grp = as.character(rv$grp), marker = rv$marker, lp = rv$lp, y = rv$y,
  deviance = c(deviance(r1), deviance(r2), deviance(r3), deviance(r4)),
  lr14 = as.list(q14), lr24 = as.list(q24), lr34 = as.list(q34),
  choice = if (q14["p"] >= 0.05) "original" else if (q24["p"] >= 0.05) "recalibration_in_the_large" else
    if (q34["p"] >= 0.05) "logistic_recalibration" else "revision",
  revised = as.list(coef(r4)), recal = unname(coef(r3)))
write_json(out, "meta_fixture.json", digits = NA, auto_unbox = TRUE, pretty = FALSE)
