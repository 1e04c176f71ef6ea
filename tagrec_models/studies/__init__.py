"""Studies that train and score recommenders: the validation search and multi-seed runs
(``selection``) and paper 2's parameter sweeps (``sweeps``, ``sweep_tables``).

This layer sits above ``tagrec_models.recommenders``; nothing below it imports from here.
"""
