"""The paper's Deep Multimodal Feature Representation, DMFR (paper 3, section 2 and Fig. 1).

* visual view: the CNN embedding of an image reduced by ``Autoencoder`` (1,280 -> 300 here;
  4,096 -> 300 in the paper), trained on the training images only;
* semantic view: the annotation as a bag of deep textual words: ``SkipGram`` tag vectors from the
  training annotations, clustered by ``TextualWords``.

``semantic_view="tags"`` replaces the bag of deep words by the raw binary tag vector (an
ablation: it shows what the clustering costs or gains).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import sparse

from tagrec_models.crossmodal._torch import Log, quiet
from tagrec_models.crossmodal.autoencoder import Autoencoder, AutoencoderConfig
from tagrec_models.crossmodal.skipgram import SkipGram, SkipGramConfig
from tagrec_models.crossmodal.textual_words import TextualWords, TextualWordsConfig


@dataclass(frozen=True)
class DMFRConfig:
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    skipgram: SkipGramConfig = field(default_factory=SkipGramConfig)
    words: TextualWordsConfig = field(default_factory=TextualWordsConfig)
    semantic_view: Literal["words", "tags"] = "words"


def annotations_of(tags: sparse.spmatrix) -> list[np.ndarray]:
    """The tag indices of each row of a binary post x tag matrix."""
    tags = sparse.csr_matrix(tags)
    return [tags.indices[tags.indptr[i] : tags.indptr[i + 1]].astype(np.int64) for i in range(tags.shape[0])]


def fingerprint(train_visual: np.ndarray, train_tags: sparse.spmatrix) -> str:
    """A digest of the training data, so a fitted DMFR is only reused on the data it saw."""
    tags = sparse.csr_matrix(train_tags)
    digest = hashlib.sha1(np.ascontiguousarray(train_visual, dtype=np.float32).tobytes())
    digest.update(np.asarray(tags.shape, dtype=np.int64).tobytes())
    digest.update(tags.indptr.astype(np.int64).tobytes())
    digest.update(tags.indices.astype(np.int64).tobytes())
    return digest.hexdigest()


class DeepMultimodalFeatures:
    """``fit(train_visual, train_tags)``; ``visual(x)`` and ``semantic(tags)`` give the two views.

    One fitted DMFR can feed the ``cca``, ``kcca`` and ``dcca`` recommenders (pass it as
    ``fit(data, dmfr=...)``): they check that its config and training data are theirs."""

    def __init__(self, config: DMFRConfig | None = None) -> None:
        self.config = config or DMFRConfig()
        if self.config.semantic_view not in ("words", "tags"):
            raise ValueError(f"semantic_view must be 'words' or 'tags', got {self.config.semantic_view!r}")
        self.autoencoder: Autoencoder | None = None
        self.skipgram: SkipGram | None = None
        self.words: TextualWords | None = None
        self.n_tags: int | None = None
        self.train_fingerprint: str | None = None

    def fit(self, train_visual: np.ndarray, train_tags: sparse.spmatrix, log: Log = quiet) -> "DeepMultimodalFeatures":
        train_tags = sparse.csr_matrix(train_tags)
        if len(train_visual) != train_tags.shape[0]:
            raise ValueError(f"train_visual has {len(train_visual)} rows but train_tags has {train_tags.shape[0]}")
        self.n_tags = train_tags.shape[1]
        self.train_fingerprint = fingerprint(train_visual, train_tags)
        log("dmfr: training the autoencoder on the training images")
        self.autoencoder = Autoencoder(self.config.autoencoder).fit(train_visual, log)
        log(f"dmfr: autoencoder keeps {self.autoencoder.explained_variance:.1%} of the input variance")
        if self.config.semantic_view == "words":
            log("dmfr: training skip-gram tag vectors on the training annotations")
            self.skipgram = SkipGram(self.config.skipgram).fit(annotations_of(train_tags), self.n_tags, log)
            self.words = TextualWords(self.config.words).fit(self.skipgram.vectors)
            log(f"dmfr: {self.words.n_words} deep textual words from {self.n_tags} tags")
        return self

    def visual(self, x: np.ndarray) -> np.ndarray:
        if self.autoencoder is None:
            raise RuntimeError("DeepMultimodalFeatures must be fitted first")
        return self.autoencoder.encode(x)

    def semantic(self, tags: sparse.spmatrix) -> np.ndarray:
        tags = sparse.csr_matrix(tags)
        if self.n_tags is None:
            raise RuntimeError("DeepMultimodalFeatures must be fitted first")
        if tags.shape[1] != self.n_tags:
            raise ValueError(f"tag matrix has {tags.shape[1]} columns, DMFR was fitted on {self.n_tags}")
        if self.config.semantic_view == "tags":
            return np.asarray(tags.todense(), dtype=np.float32)
        return self.words.bags(tags)

    def state(self) -> dict:
        return {
            "config": self.config,
            "n_tags": self.n_tags,
            "train_fingerprint": self.train_fingerprint,
            "autoencoder": self.autoencoder.state() if self.autoencoder else None,
            "skipgram": self.skipgram.state() if self.skipgram else None,
            "words": self.words,
        }

    @classmethod
    def from_state(cls, state: dict) -> "DeepMultimodalFeatures":
        model = cls(state["config"])
        model.n_tags = state["n_tags"]
        model.train_fingerprint = state["train_fingerprint"]
        model.autoencoder = Autoencoder.from_state(state["autoencoder"]) if state["autoencoder"] else None
        model.skipgram = SkipGram.from_state(state["skipgram"]) if state["skipgram"] else None
        model.words = state["words"]
        return model
