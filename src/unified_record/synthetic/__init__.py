"""Synthetic population, partner feeds and ground truth for demos, tests and benchmarks."""

from unified_record.synthetic.generator import (
    GenerateError,
    Summary,
    check_request,
    generate_dataset,
)
from unified_record.synthetic.profile import (
    DEFAULT_PROFILE,
    FEEDS,
    Profile,
    ProfileError,
    load_profile,
)

__all__ = [
    "DEFAULT_PROFILE",
    "FEEDS",
    "GenerateError",
    "Profile",
    "ProfileError",
    "Summary",
    "check_request",
    "generate_dataset",
    "load_profile",
]
