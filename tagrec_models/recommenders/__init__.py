"""Tag recommenders, one module per model, each registered by name (see ``registry``)."""

from tagrec_models.recommenders.base import Recommender
from tagrec_models.recommenders.registry import available, get_recommender, register

__all__ = ["Recommender", "available", "get_recommender", "register"]
