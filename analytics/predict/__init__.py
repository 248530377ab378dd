"""Using a developed model: score new patients (``cohortlab predict``, ``study.model(name).predict``)."""

from analytics.predict.images import ImageFiles
from analytics.predict.patients import PredictError
from analytics.predict.score import EXCLUDED, predict_file, predict_frame

__all__ = ["EXCLUDED", "ImageFiles", "PredictError", "predict_file", "predict_frame"]
