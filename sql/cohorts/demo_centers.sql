-- The demo cohort restricted to a list of centres, built on the shared view sql/views/patient_clinical.sql.
-- e.g. cohortlab cohort study.toml demo_centers --param min_age=18 --param 'centers=["A", "B"]'
SELECT patient_id,
       center,
       high_risk        AS label,
       followup_months  AS time,
       event,
       age,
       sex,
       esr,
       anti_ssa,
       igg,
       focus_score
FROM patient_clinical
WHERE age >= $min_age
  AND list_contains($centers, center)
