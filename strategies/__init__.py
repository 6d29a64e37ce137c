"""Search strategies for nni-covid3d (installed as ``nni_covid3d.strategies``)."""
