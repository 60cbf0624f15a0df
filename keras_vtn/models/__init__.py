"""Model families: one module per family (its builder and pure `*_graph(config)`), its checkpoint
converter beside it in `*_convert.py`, the family table in `families` and the shared build steps
(weights → config → graph → weights applied) in `pipeline`."""
