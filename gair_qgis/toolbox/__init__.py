"""Processing provider and algorithms: thin adapters from QGIS parameters to engine functions."""
