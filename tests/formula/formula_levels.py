"""The declared levels of the nwtco factors the formula tests use (histol, stage)."""

LEVELS = {"histol": ["FH", "UH"], "stage": ["I", "II", "III", "IV"]}
