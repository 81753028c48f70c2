"""The web pages under /ui (server-rendered, GOV.UK Design System): find a client, the
unified record, the data steward's review queue, governance, and linkage quality."""

from unified_record.api.ui.web import mount_ui

__all__ = ["mount_ui"]
