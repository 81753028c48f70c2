"""Unified Record: federated health-and-social-care record integration."""

__version__ = "0.1.0"
