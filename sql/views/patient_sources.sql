-- Slides and scans per patient, and how many of them each feature set embedded.
SELECT p.patient_id,
       (SELECT count(*) FROM slides s WHERE s.patient_id = p.patient_id) AS n_slides,
       (SELECT count(*) FROM scans c WHERE c.patient_id = p.patient_id) AS n_scans,
       (SELECT count(*) FROM embed_items e WHERE e.patient_id = p.patient_id AND e.status = 'done') AS n_embedded
FROM patients p
