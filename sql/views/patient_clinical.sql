-- Every patient with its centre and all clinical columns (one row per patient).
SELECT p.patient_id, p.center, c.* EXCLUDE (patient_id)
FROM patients p
LEFT JOIN clinical c USING (patient_id)
