"""Data layer: the data mirror, records, graphs, splits, target transforms and data modules."""
