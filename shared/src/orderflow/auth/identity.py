"""Who is calling: one `Caller` for people (local accounts, single sign-on) and company
systems (API keys), and the role names every service checks.

People have roles; systems have scopes. Both are plain strings in `Caller.roles`, so a route
names what it allows in one list whatever kind of caller it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

# People
SALESPERSON = "salesperson"
SALES_MANAGER = "sales_manager"
REVIEWER_PREFIX = "reviewer:"
OPS = "ops"
ADMIN = "admin"

# Company systems (API key scopes)
ORDERS_WRITE = "orders:write"  # create, revise, submit and withdraw any salesperson's orders
ORDERS_READ = "orders:read"  # read every order
REVIEWS_READ = "reviews:read"  # read every round and review
CONTRACTS_READ = "contracts:read"  # read every contract and its documents
CONTRACTS_WRITE = "contracts:write"  # record sending, signing and voiding of any contract
NOTIFICATIONS_READ = "notifications:read"  # read anyone's in-app inbox
METRICS_READ = "metrics:read"  # scrape /metrics

PERSON_ROLES = (SALESPERSON, SALES_MANAGER, OPS, ADMIN)
SYSTEM_SCOPES = (
    ORDERS_WRITE,
    ORDERS_READ,
    REVIEWS_READ,
    CONTRACTS_READ,
    CONTRACTS_WRITE,
    NOTIFICATIONS_READ,
    METRICS_READ,
    OPS,
)


def reviewer(department: str) -> str:
    return f"{REVIEWER_PREFIX}{department}"


def valid_role(role: str) -> bool:
    if role.startswith(REVIEWER_PREFIX):
        department = role.removeprefix(REVIEWER_PREFIX)
        return bool(department) and department.replace("_", "").isalnum()
    return role in PERSON_ROLES or role in SYSTEM_SCOPES


CallerKind = Literal["person", "system"]
Via = Literal["api_key", "session", "oidc"]


@dataclass(frozen=True)
class Caller:
    """An authenticated person or system. `id` is what every "by" field records: a person's
    username (the salesperson id on their orders) or `key:<name>` for a system."""

    id: str
    kind: CallerKind
    name: str
    roles: frozenset[str]
    via: Via
    team: frozenset[str] = field(default_factory=frozenset)
    email: str | None = None
    source: str | None = None  # the client address the request came from

    def has(self, *roles: str) -> bool:
        """Any of `roles`; `reviewer:*` stands for any department's reviewer."""
        for role in roles:
            if role == f"{REVIEWER_PREFIX}*":
                if self.departments:
                    return True
            elif role in self.roles:
                return True
        return False

    @property
    def departments(self) -> frozenset[str]:
        return frozenset(
            r.removeprefix(REVIEWER_PREFIX) for r in self.roles if r.startswith(REVIEWER_PREFIX)
        )

    def reviews_for(self, department: str) -> bool:
        return department in self.departments

    def acts_for(self, salesperson_id: str, *, write: bool = False) -> bool:
        """May this caller see (or, with `write`, change) this salesperson's orders?"""
        if self.has(ORDERS_WRITE) or (not write and self.has(ORDERS_READ)):
            return True
        if self.has(SALESPERSON) and salesperson_id == self.id:
            return True
        return self.has(SALES_MANAGER) and (
            salesperson_id == self.id or salesperson_id in self.team
        )

    def sees_team(self) -> frozenset[str] | None:
        """The salesperson ids whose orders this caller may list; None means all of them."""
        if self.has(ORDERS_WRITE, ORDERS_READ):
            return None
        ids: set[str] = set()
        if self.has(SALESPERSON, SALES_MANAGER):
            ids.add(self.id)
        if self.has(SALES_MANAGER):
            ids |= self.team
        return frozenset(ids)

    def audit(self) -> dict[str, str]:
        """What a timeline entry or a "by" field keeps of the caller."""
        entry = {"id": self.id, "kind": self.kind, "via": self.via}
        if self.source:
            entry["source"] = self.source
        return entry


def roles_of(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v for v in values if valid_role(v))
