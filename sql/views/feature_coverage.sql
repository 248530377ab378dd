-- Which pooled features each patient has (no embeddings: cheap to scan).
SELECT patient_id, feature_set, pooling, n_instances
FROM patient_features
