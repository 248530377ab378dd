-- The demo study: adults (age >= $min_age) with the high-risk label, follow-up and clinical variables.
-- centre A is development, centre B external (see the study's [split]).
SELECT p.patient_id,
       p.center,
       c.high_risk        AS label,
       c.followup_months  AS time,
       c.event,
       c.age,
       c.sex,
       c.esr,
       c.anti_ssa,
       c.igg,
       c.focus_score
FROM patients p
JOIN clinical c USING (patient_id)
WHERE c.age >= $min_age
