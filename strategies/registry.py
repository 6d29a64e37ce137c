"""Search strategies by name: GumbelDNAS beside NNI's one-shot strategies (used by ``--strategy``)."""
from __future__ import annotations

from typing import Any, Callable

from nni.nas.strategy import Strategy

__all__ = ["STRATEGY_NAMES", "get"]


def _gumbel_dnas(**kwargs: Any) -> Strategy:
    from .gumbel_dnas import GumbelDNAS

    return GumbelDNAS(**kwargs)


def _nni(name: str) -> Callable[..., Strategy]:
    def make(**kwargs: Any) -> Strategy:
        from nni.nas.oneshot.pytorch import strategy as nni_oneshot

        return getattr(nni_oneshot, name)(**kwargs)

    make.__name__ = name
    return make


_FACTORIES: dict[str, Callable[..., Strategy]] = {
    "gumbel-dnas": _gumbel_dnas,
    "darts": _nni("DARTS"),
    "gumbel-darts": _nni("GumbelDARTS"),
    "proxyless": _nni("Proxyless"),
    "random-oneshot": _nni("RandomOneShot"),
}
STRATEGY_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def get(name: str, **kwargs: Any) -> Strategy:
    """A new strategy instance by name (``gumbel-dnas``, ``darts``, ``gumbel-darts``, ``proxyless``,
    ``random-oneshot``); ``kwargs`` go to its constructor."""
    key = name.lower().replace("_", "-")
    if key not in _FACTORIES:
        raise ValueError(f"unknown search strategy {name!r}; choose one of {', '.join(STRATEGY_NAMES)}")
    return _FACTORIES[key](**kwargs)
