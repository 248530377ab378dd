# Reference for the likelihood-ratio test of added value with a factor: R's anova on nested glm fits.
# Reads lr_factor_data.csv (written once with a seeded generator; committed) and writes lr_factor_fixture.json.
# Run from this folder: Rscript lr_factor_fixture.R
d <- read.csv("lr_factor_data.csv", stringsAsFactors = FALSE)
d$grade <- factor(d$grade, levels = c("g1", "g2", "g3", "g4"))
old <- glm(label ~ age, family = binomial, data = d)
new <- glm(label ~ age + grade, family = binomial, data = d)
a <- anova(old, new, test = "LRT")
out <- sprintf(paste0('{"deviance_reduced": %.17g, "deviance_full": %.17g, "statistic": %.17g, "df": %d, ',
                      '"p": %.17g, "r": "%s", "stats": "%s"}\n'),
               deviance(old), deviance(new), a$Deviance[2], as.integer(a$Df[2]), a$`Pr(>Chi)`[2],
               R.version.string, as.character(packageVersion("stats")))
cat(out, file = "lr_factor_fixture.json")
