"""Install WordNet 3.0 for nltk from Debian's /usr/share/wordnet into the machine-wide nltk
data folder (or the one given) and verify it (called by scripts/setup_system.sh; the logic is
tagrec_models.vocabulary.wordnet.install_wordnet).

    python scripts/setup_wordnet.py [--nltk-data FOLDER]
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from tagrec_models.vocabulary.wordnet import main
except ModuleNotFoundError as error:
    if error.name != "tagrec_models":
        raise
    # Run from a checkout whose package is not installed into this interpreter yet.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tagrec_models.vocabulary.wordnet import main

if __name__ == "__main__":
    raise SystemExit(main())
