"""One writer per partner feed; each turns true people into that partner's records."""

from collections.abc import Callable

from unified_record.synthetic.context import ChunkContext
from unified_record.synthetic.feeds import (
    acute_adt,
    community_health,
    council_adult_social_care,
    council_childrens_social_care,
    gp_fhir,
)
from unified_record.synthetic.population import Person

FeedWriter = Callable[[ChunkContext, list[Person]], None]

WRITERS: dict[str, FeedWriter] = {
    "council_adult_social_care": council_adult_social_care.write,
    "council_childrens_social_care": council_childrens_social_care.write,
    "acute_adt": acute_adt.write,
    "gp_fhir": gp_fhir.write,
    "community_health": community_health.write,
}
HEADERS: dict[str, str] = {
    council_adult_social_care.TARGET: council_adult_social_care.HEADER,
    council_childrens_social_care.TARGET: council_childrens_social_care.HEADER,
    community_health.TARGET: community_health.HEADER,
    "truth.csv": "source,source_record_id,person_id",
    "sensitive.csv": "source,source_record_id,category",
}

__all__ = ["HEADERS", "WRITERS", "FeedWriter"]
