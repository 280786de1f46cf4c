"""Scoring service: model bundles (joblib + manifest), training, and the FastAPI app.

The API object is ``scoring.api:app``; ``python -m scoring`` serves it locally and
``python -m scoring.train`` trains a bundle on Part 1 features.
"""
