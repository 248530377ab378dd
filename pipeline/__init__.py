"""cohortlab embedding stage and the study store (never imports analytics)."""
