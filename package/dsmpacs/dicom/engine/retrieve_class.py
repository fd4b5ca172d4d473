"""C-MOVE and C-GET served by handlers that drive the sub-operations themselves.

pynetdicom's Query/Retrieve SCP wants each instance yielded as a decoded
Dataset, which loads whole runs into memory, cannot offer an instance in its
stored transfer syntax and fall back per instance, and sends our own AE title
as the Move Originator instead of the requester's. When the EVT_C_MOVE or
EVT_C_GET handler bound to an association is marked ``@suboperation_handler``,
the request goes to dicom/retrieve_service.py's ``serve`` instead, which hands
the handler a RetrieveCall. Unmarked handlers keep pynetdicom's behaviour.
"""
from __future__ import annotations

from typing import Callable

from pynetdicom import evt
from pynetdicom.service_class import QueryRetrieveServiceClass

_MARK = "_dsmpacs_suboperations"


def suboperation_handler(func: Callable) -> Callable:
    """Mark an EVT_C_MOVE / EVT_C_GET handler as taking a RetrieveCall."""
    setattr(func, _MARK, True)
    return func


class RetrieveServiceClass(QueryRetrieveServiceClass):
    """Routes C-MOVE and C-GET to a @suboperation_handler when one is bound."""

    def _dispatch(self, event, kind: str, req, context) -> bool:
        bound = self.assoc.get_handlers(event)
        handler, args = bound if isinstance(bound, tuple) else (None, None)
        if not getattr(handler, _MARK, False):
            return False
        # The adapter builds the call object and answers failures; imported here
        # because it imports this module for the marker.
        from dsmpacs.dicom.retrieve_service import serve

        serve(self, kind, req, context, handler, args or [])
        return True

    def _move_scp(self, req, context) -> None:
        if not self._dispatch(evt.EVT_C_MOVE, "C-MOVE", req, context):
            super()._move_scp(req, context)

    def _get_scp(self, req, context) -> None:
        if not self._dispatch(evt.EVT_C_GET, "C-GET", req, context):
            super()._get_scp(req, context)
