"""test.py's evaluation report, one kind per module: classification, regression, reconstruction
(and any `Report` of your own that you add here)."""
