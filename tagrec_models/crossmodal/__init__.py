"""Deep cross-modal correlation mining (paper 3: Zhang et al., *Image Tag Recommendation via Deep
Cross-modal Correlation Mining*).

The pieces, each usable on its own:

* ``autoencoder``: the deep visual feature, a CNN embedding reduced to 300-d (section 2);
* ``skipgram`` and ``textual_words``: skip-gram tag vectors (paper 3, eqs. 1-2) clustered into "deep
  textual words", each annotation a bag of them (section 2);
* ``dmfr``: the two views together (the paper's Deep Multimodal Feature Representation);
* ``cca``, ``kcca``, ``dcca``: linear, kernel and deep CCA (paper 3, eqs. 3-8) into a common space;
* ``ccs``: the cross-modal correlation score of Table 1;
* ``transfer``: tag recommendation by similarity in the common space (the recommender base
  ``tagrec_models.recommenders.common_space.CommonSpaceRecommender`` uses it),
  shared by the registered ``cca``, ``kcca``, ``dcca`` and ``cca_knn`` recommenders.

Nothing here imports Dagster.
"""
