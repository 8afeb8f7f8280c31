"""Serving the feeds: the batch scorer the Faust worker hosts (``scorer``), the model in service per
feed (``models``), the ledger of offsets whose outputs are in flight (``offsets``) and the
worker's counters (``metrics``)."""
