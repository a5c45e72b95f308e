"""The site as the pages need it: office, streets and categories with their labels."""

from __future__ import annotations

from fastapi import APIRouter

from dispatcher.api.deps import CurrentUser, DispatcherDep
from dispatcher.api.models import CategoryPublic, ErrorPublic, SitePublic, StreetPublic

router = APIRouter(tags=["site"])


@router.get(
    "/site",
    response_model=SitePublic,
    responses={401: {"model": ErrorPublic, "description": "not logged in"}},
)
def site(d: DispatcherDep, user: CurrentUser) -> SitePublic:
    s = d.site
    return SitePublic(
        office_id=s.office.id,
        name=s.office.name,
        name_en=s.office.name_en,
        timezone=s.office.timezone,
        streets=[StreetPublic(id=st.id, name=st.name, name_en=st.name_en) for st in s.streets],
        categories=[
            CategoryPublic(
                id=k,
                label=c.label,
                label_en=c.label_en,
                priority=c.priority,
                sla_minutes=c.sla_minutes,
                verify=c.verify,
            )
            for k, c in s.categories.items()
        ],
    )
