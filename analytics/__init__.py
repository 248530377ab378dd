"""cohortlab analytics: cohorts, models, statistics, explanations, reports, CLI (reads the store only)."""
