"""Kaggle: the API (credentials, download, submit) and the offline notebook bundle."""
