"""The generator profile: population shape, feed coverage and noise rates, read from YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from unified_record.synthetic.reference import NAME_POOLS

Rate = Annotated[float, Field(ge=0.0, le=1.0)]
FEEDS = (
    "council_adult_social_care",
    "council_childrens_social_care",
    "acute_adt",
    "gp_fhir",
    "community_health",
)
SENSITIVE_CATEGORIES = ("safeguarding", "sexual_health", "mental_health", "substance_misuse")
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_PROFILE = REPO_ROOT / "synthetic_data" / "profiles" / "default.yaml"


class ProfileError(Exception):
    """The profile file is missing or invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PopulationProfile(_Strict):
    name_origins: dict[str, float]
    middle_name: Rate
    hyphenated_surname: Rate
    married_name_change: Rate
    moved_house: Rate
    twins: Rate
    care_home_over_75: Rate
    care_homes: int = Field(ge=1, le=10_000)
    no_nhs_number: Rate
    phone: Rate
    email: Rate
    gp_practices: int = Field(ge=1, le=10_000)

    @field_validator("name_origins")
    @classmethod
    def _known_origins(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(NAME_POOLS))
        if unknown:
            raise ValueError(f"unknown name origin(s) {unknown}; known: {sorted(NAME_POOLS)}")
        if any(w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        return value


class Coverage(_Strict):
    """Probability that a person of each age group appears in a feed."""

    child: Rate  # under 18
    adult: Rate  # 18-64
    older: Rate  # 65-74
    elderly: Rate  # 75 and over


class Noise(_Strict):
    nhs_number_missing: Rate
    nhs_number_typo: Rate
    name_typo: Rate
    nickname: Rate
    first_middle_swap: Rate
    dob_day_month_swap: Rate
    dob_digit_off: Rate
    old_surname: Rate
    hyphen_part_only: Rate
    old_address: Rate
    name_dob_only: Rate
    duplicate_record: Rate


class FeedProfile(_Strict):
    coverage: Coverage
    noise: Noise
    sensitive: dict[str, Rate] = Field(default_factory=dict)
    events_per_client: tuple[int, int] = (1, 4)
    looked_after: Rate = 0.0
    merge: Rate = 0.0

    @field_validator("sensitive")
    @classmethod
    def _known_categories(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(SENSITIVE_CATEGORIES))
        if unknown:
            raise ValueError(f"unknown sensitive category {unknown}")
        return value


class HouseholdMix(_Strict):
    single: float = Field(ge=0)
    couple: float = Field(ge=0)
    family: float = Field(ge=0)
    care_home: float = Field(ge=0)


class Profile(_Strict):
    name: str
    population: PopulationProfile
    households: HouseholdMix
    feeds: dict[str, FeedProfile]

    @field_validator("feeds")
    @classmethod
    def _all_feeds(cls, value: dict[str, FeedProfile]) -> dict[str, FeedProfile]:
        if set(value) != set(FEEDS):
            raise ValueError(f"feeds must be exactly {list(FEEDS)}")
        return value


def load_profile(path: Path | None = None) -> Profile:
    """Load and validate a profile; raise ProfileError with a one-line reason."""
    path = path or DEFAULT_PROFILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ProfileError(f"{path}:{where} not valid YAML") from None
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "profile"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ProfileError(f"{path}: {field}: {err['msg']}{more}") from None
