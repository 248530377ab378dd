"""cohortlab's embedding stage and the study store (never imports analytics).

The flow, left to right::

    config (study.toml) -> ingest (manifests, checked) -> store (DuckDB + instance files)
                                                            ^
    wsi/ (slide -> tissue -> grid -> cache -> tiles -> embedder) --+-- embed (the runner) -> pooling
    ct/  (volume -> encoders | radiomics_features -> embedder) ----+

* :mod:`pipeline.config`, :mod:`pipeline.manifest`, :mod:`pipeline.ingest`: the study and its manifests;
* :mod:`pipeline.store`, :mod:`pipeline.atomic`: the store's schema, reads and writes, all-or-nothing files;
* :mod:`pipeline.embed` (runner), :mod:`pipeline.source` (its contract with an embedder),
  :mod:`pipeline.image_encoders` and :mod:`pipeline.device` (shared by both modalities), :mod:`pipeline.pooling`;
* :mod:`pipeline.wsi`, :mod:`pipeline.ct`: one sub-package per modality;
* :mod:`pipeline.synth`: a synthetic study for the demo and the tests;
* :mod:`pipeline.errors`: :class:`~pipeline.errors.CohortlabError`, the root of every error raised on purpose.

Nothing is imported here; sub-packages load their modules on first use.
"""
