"""The approver directory as data (directory.yaml): people, their roles and channels, the services and who
owns them. Shapes only: `models.config` reads them from YAML; nothing here does I/O."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from ._fields import Name, Strict


class Channel(Strict):
    """One way to reach a person. The notifications package knows how to send on each type."""

    type: Literal["console", "file", "email", "slack", "teams", "webhook"]
    address: str | None = Field(default=None, description="e-mail address (email)")
    url: str | None = Field(default=None, description="incoming-webhook URL (slack, teams, webhook)")
    path: str | None = Field(default=None,
                             description="file to append to (file); a relative path is under CHANGEFLOW_HOME")

    @model_validator(mode="after")
    def _target_present(self) -> "Channel":
        needed = {"email": "address", "slack": "url", "teams": "url", "webhook": "url", "file": "path"}.get(self.type)
        if needed and not getattr(self, needed):
            raise ValueError(f"a {self.type} channel needs `{needed}`")
        if self.url is not None:
            problem = url_problem(self.url)
            if problem:
                raise ValueError(f"url: {problem}")
        return self


def url_problem(url: str) -> str | None:
    """Why a webhook URL cannot be used (None: it can). Checked when the directory loads, not at 3 a.m."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return f"not a usable URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    return None


class Person(Strict):
    name: str = Field(min_length=1, max_length=200)
    roles: list[Name] = Field(default_factory=list)
    channels: list[Channel] = Field(default_factory=lambda: [Channel(type="console")])
    slack_user_id: str | None = Field(
        default=None, pattern=r"^[UW][A-Z0-9]{2,20}$",
        description="Slack member id (Profile > Copy member ID): a click on an Approve button acts as this person")


class ServiceEntry(Strict):
    owners: list[Name] = Field(default_factory=list)
    stakeholders: list[Name] = Field(default_factory=list)
    depends_on: list[Name] = Field(default_factory=list, description="Services this one calls: a change to one of "
                                   "them is shown to approvers with this service among what depends on it")
    health: str | None = Field(default=None, pattern=r"^https?://\S+$", description="Its health URL (200: healthy): "
                               "what a checklist's service_health item (the smoke test) probes")
    team: Name | None = Field(default=None, description="The team that owns it: the success score is also given "
                              "per team (`changeflow report score`)")


class Directory(Strict):
    """Who may approve what, and how to reach them."""

    people: dict[Name, Person]
    services: dict[Name, ServiceEntry] = Field(default_factory=dict)
    automations: list[Name] = Field(
        default_factory=list,
        description="Names that file changes on their own (the scheduled maintenance): they may request, never "
        "approve, confirm or start anything")
    witnesses: dict[Name, Channel] = Field(
        default_factory=dict,
        description="Where each signed audit checkpoint is also sent (an auditor's webhook, mailbox or a file "
        "outside HOME): `audit verify-bundle --witness` checks a bundle against what they received, which "
        "whoever can write HOME cannot re-sign")

    def person_with_slack_id(self, slack_user_id: str) -> str | None:
        return next((name for name, person in self.people.items() if person.slack_user_id == slack_user_id), None)

    @model_validator(mode="after")
    def _slack_ids_are_unique(self) -> "Directory":
        seen: dict[str, str] = {}
        for name, person in self.people.items():
            if person.slack_user_id and seen.setdefault(person.slack_user_id, name) != name:
                raise ValueError(f"people.{name}.slack_user_id: {person.slack_user_id} is already "
                                 f"{seen[person.slack_user_id]}'s")
        return self

    @model_validator(mode="after")
    def _services_name_known_people(self) -> "Directory":
        for service, entry in self.services.items():
            for who in (*entry.owners, *entry.stakeholders):
                if who not in self.people:
                    raise ValueError(f"services.{service}: {who!r} is not in people")
            for used in entry.depends_on:
                if used not in self.services:
                    raise ValueError(f"services.{service}.depends_on: {used!r} is not a service of the directory")
        return self

    def dependents(self, service: str) -> list[str]:
        """The services that depend on `service`, directly or through others (what a change to it may break)."""
        found: set[str] = set()
        frontier = [service]
        while frontier:
            current = frontier.pop()
            for name, entry in self.services.items():
                if current in entry.depends_on and name not in found and name != service:
                    found.add(name)
                    frontier.append(name)
        return sorted(found)

    def related(self, service: str, depth: int) -> dict[str, list[str]]:
        """The services at most `depth` `depends_on` steps from `service`, either way, each with the shortest path
        from `service` to it (`service` itself: [service]). A change to any of them at the same time may break, or
        be broken by, a change to `service`."""
        paths = {service: [service]}
        frontier = [service]
        for _ in range(depth):
            reached = []
            for current in frontier:
                entry = self.services.get(current)
                neighbours = [*(entry.depends_on if entry else []),
                              *(name for name, other in self.services.items() if current in other.depends_on)]
                for name in neighbours:
                    if name not in paths:
                        paths[name] = [*paths[current], name]
                        reached.append(name)
            frontier = reached
        return paths

    def dependency_path(self, path: list[str]) -> str:
        """`checkout depends on payments, which depends on platform`: a path of `related`, said as edges."""
        said = []
        for here, there in zip(path, path[1:]):
            entry = self.services.get(here)
            said.append(f"{here} depends on {there}" if entry and there in entry.depends_on
                        else f"{there} depends on {here}")
        return "; ".join(said)

    def may_request(self, name: str) -> bool:
        """A requester is a person of the directory or one of its automations: never an invented name, which
        would let someone file under a stranger's name and approve their own change."""
        return name in self.people or name in self.automations

    def holders(self, role: str) -> list[str]:
        return sorted(user for user, person in self.people.items() if role in person.roles)

    def holds(self, user: str, role: str) -> bool:
        person = self.people.get(user)
        return person is not None and role in person.roles

    def operator_refusal(self, operator: str, roles: list[str], may: str) -> str | None:
        """Why `operator` may not do an operator act (`may`: "print a code") reserved to `roles` (None: they may)."""
        if any(self.holds(operator, role) for role in roles):
            return None
        return f"{operator!r} holds none of the roles that may {may} ({', '.join(roles)})"
