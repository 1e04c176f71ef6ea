"""tagrec_models: the plain-Python library behind tagrec (no Dagster import here).

Sources, vocabulary, preprocessing, image features, recommenders and evaluation for the three
papers in ``shared/papers``; the Dagster assets in ``assets/`` only call into this package.
"""

__version__ = "0.1.0"
