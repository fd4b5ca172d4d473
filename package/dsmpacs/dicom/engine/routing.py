"""Replace one of pynetdicom's DIMSE service classes with ours, once per process.

pynetdicom picks the service class for each request with
``association.uid_to_service_class``; wrapping that function is its only
extension point for DIMSE-C services. C-STORE and C-MOVE/C-GET each route their
class through here, and each wrapper passes on whatever it does not replace.
"""
from __future__ import annotations

from pynetdicom import association

_ROUTES = "_dsmpacs_routes"


def route(original: type, replacement: type) -> None:
    """Serve requests pynetdicom would give ``original`` with ``replacement`` instead."""
    current = association.uid_to_service_class
    routes: dict[type, type] = dict(getattr(current, _ROUTES, {}))
    if routes.get(original) is replacement:
        return
    base = getattr(current, "__wrapped__", current)
    routes[original] = replacement

    def routed(uid):
        cls = base(uid)
        return routes.get(cls, cls)

    routed.__wrapped__ = base
    setattr(routed, _ROUTES, routes)
    association.uid_to_service_class = routed
