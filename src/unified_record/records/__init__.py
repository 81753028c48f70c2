"""The combined record as partners and staff read it: search over the encrypted store,
unified clients (golden Patients), and everything about one client."""

from unified_record.records.everything import everything
from unified_record.records.search import (
    Found,
    SearchError,
    SearchRequest,
    find,
    parse_search,
)

__all__ = ["Found", "SearchError", "SearchRequest", "everything", "find", "parse_search"]
