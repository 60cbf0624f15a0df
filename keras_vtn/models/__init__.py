"""Model builders, one module per family; conversion code lives beside them in *_convert.py."""
