"""Domain errors. The web layer renders them as RFC 9457 problem documents."""

from __future__ import annotations


class DomainError(Exception):
    """A request the domain refuses. `slug` names the problem type (/problems/{slug})."""

    status = 422

    def __init__(
        self,
        slug: str,
        title: str,
        detail: str,
        *,
        status: int | None = None,
        field: str | None = None,
        **extra: object,
    ) -> None:
        super().__init__(detail)
        self.slug = slug
        self.title = title
        self.detail = detail
        if status is not None:
            self.status = status
        self.field = field
        self.extra = extra


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    status = 409
