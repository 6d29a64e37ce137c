"""Model spaces for nni-covid3d (installed as ``nni_covid3d.search_spaces``)."""
