# R reference fixtures for tests/survival_regression: cox.zph (survival >= 3) and rms::nomogram on a cph.
# Run from the repository root:  Rscript tests/survival_regression/zph_fixture.R
# Data: survival::lung (NCCTG advanced lung cancer), complete cases; ties in the event times.
suppressMessages({library(survival); library(rms); library(jsonlite)})
out <- "tests/survival_regression"
versions <- list(R = R.version.string, survival = as.character(packageVersion("survival")),
                 rms = as.character(packageVersion("rms")))

d <- na.omit(lung[, c("time", "status", "age", "sex", "ph.ecog", "ph.karno")])
d$status <- d$status - 1
d$ecog <- factor(pmin(d$ph.ecog, 2), levels = 0:2)  # one patient with ECOG 3 joins ECOG 2
fit <- coxph(Surv(time, status) ~ ph.karno + ecog + rcs(age, 4) + sex, data = d, ties = "efron", x = TRUE)
X <- model.matrix(fit)
zph <- lapply(c("km", "rank", "identity"), function(tr) {
  z <- cox.zph(fit, transform = tr, terms = TRUE)
  list(transform = tr, terms = rownames(z$table), chisq = unname(z$table[, "chisq"]),
       df = unname(z$table[, "df"]), p = unname(z$table[, "p"]), x = z$x, time = z$time,
       y = unname(z$y), var = unname(z$var))
})
# plot.cox.zph's smooth (natural spline, df = 4, 40 points) and its +-2 SE band, its own lines, per term (km)
zk <- cox.zph(fit, transform = "km", terms = TRUE)
pred.x <- seq(from = min(zk$x), to = max(zk$x), length = 40)
lmat <- splines::ns(c(pred.x, zk$x), df = 4, intercept = TRUE)
pmat <- lmat[1:40, ]; xmat <- lmat[-(1:40), ]
qmat <- qr(xmat)
bk <- backsolve(qmat$qr[1:4, 1:4], diag(4))
seval <- ((pmat %*% (bk %*% t(bk))) * pmat) %*% rep(1, 4)
smooth <- lapply(seq_len(ncol(zk$y)), function(i) {
  yhat <- drop(pmat %*% qr.coef(qmat, zk$y[, i]))
  list(x = pred.x, fit = yhat, se2 = drop(2 * sqrt(zk$var[i, i] * seval)))
})
# Breslow ties: the same model, its coefficients and cox.zph (km)
fb <- coxph(Surv(time, status) ~ ph.karno + ecog + rcs(age, 4) + sex, data = d, ties = "breslow", x = TRUE)
zb <- cox.zph(fb, transform = "km", terms = TRUE)
breslow <- list(coefficients = unname(coef(fb)), chisq = unname(zb$table[, "chisq"]), y = unname(zb$y))
# terms = FALSE: one test per column
z1 <- cox.zph(fit, transform = "km", terms = FALSE)
zph_cols <- list(terms = rownames(z1$table), chisq = unname(z1$table[, "chisq"]), df = unname(z1$table[, "df"]),
                 p = unname(z1$table[, "p"]), y = unname(z1$y))
write_json(list(versions = versions, data = "survival::lung complete cases (time, status - 1, ph.karno, ph.ecog (3 -> 2), age, sex)",
                formula = "Surv(time, status) ~ ph.karno + ecog + rcs(age, 4) + sex, ties = 'efron'",
                columns = colnames(X), X = unname(X), time = d$time, status = d$status,
                coefficients = unname(coef(fit)), loglik = fit$loglik,
                assign = lapply(fit$assign, function(a) a - 1L),
                zph = zph, zph_columns = zph_cols, smooth_km = smooth, breslow = breslow),
           file.path(out, "zph_lung.json"), digits = NA, auto_unbox = TRUE, matrix = "rowmajor")

# Cox nomogram: cph with a numeric and two factors; survival at 1 and 2 years
d$sexf <- factor(d$sex, levels = 1:2, labels = c("male", "female"))
dd <- datadist(d); options(datadist = "dd")
f <- cph(Surv(time, status) ~ age + sexf + ecog, data = d, x = TRUE, y = TRUE, surv = TRUE)
s <- Survival(f)
horizons <- c(365, 730)
fun.at <- c(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
nom <- nomogram(f, fun = list(function(lp) s(365, lp), function(lp) s(730, lp)), funlabel = c("S365", "S730"),
                fun.at = fun.at)
axis <- function(v) list(values = v[[1]], xbeta = unname(v$Xbeta), points = unname(v$points))
info <- attr(nom, "info")
# the baseline survival Survival(f) uses: S(t | lp) = S_c(t)^exp(lp), lp centred (raw Xbeta - center) as on the nomogram
S_c <- sapply(horizons, function(t) s(t, 0))
write_json(list(versions = versions, data = "survival::lung complete cases, as zph_lung.json",
                formula = "cph(Surv(time, status) ~ age + sexf + ecog, x = TRUE, y = TRUE, surv = TRUE)",
                coefficients = as.list(coef(f)), center = f$center, sc = info$sc,
                age = axis(nom$age), sexf = axis(nom$sexf), ecog = axis(nom$ecog),
                lp_axis = list(points = nom$lp$x, lp = nom$lp$x.real),
                horizons = horizons, baseline_survival = S_c,
                survival_axes = list(list(points = nom$S365$x, survival = nom$S365$x.real),
                                     list(points = nom$S730$x, survival = nom$S730$x.real)),
                age_range = unname(range(nom$age$age))),
           file.path(out, "nomogram_lung.json"), digits = NA, auto_unbox = TRUE)
