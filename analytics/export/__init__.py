"""A developed model taken out of its study: a portable bundle with its model card (``cohortlab export``)."""

from analytics.export.bundle import BundleError, export_bundle, opened, read_bundle

__all__ = ["BundleError", "export_bundle", "opened", "read_bundle"]
