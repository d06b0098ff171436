"""Who is acting, and from where: handed explicitly to every service."""

from __future__ import annotations

import getpass
import uuid
from dataclasses import dataclass, field

from trialmgr.domain.vocab import Role


@dataclass(frozen=True)
class Actor:
    username: str
    role: Role | None = None
    trial: str | None = None
    sites: tuple[str, ...] = ()
    user_id: int | None = None
    full_name: str = ""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    client_addr: str | None = None
    console: bool = False  # the operator at the server's console, who holds every authority

    def require(self, *roles: Role) -> None:
        """Authority check on every operation (21 CFR 11.10(g)), whatever adapter called the service."""
        from trialmgr.domain.errors import PermissionDenied

        if self.console or self.role in roles:
            return
        allowed = ", ".join(r.value for r in roles)
        raise PermissionDenied(f"this needs one of the roles: {allowed} (you act as {self.role or 'no role'})")

    def require_site(self, site_code: str) -> None:
        from trialmgr.domain.errors import NotFound

        if not self.console and not self.sees_site(site_code):
            # Not found rather than forbidden: other sites' participants are not even confirmed to exist.
            raise NotFound("no such participant at your sites")

    @property
    def site(self) -> str | None:
        """The site recorded in the audit trail: the acting user's site when there is exactly one."""
        return self.sites[0] if len(self.sites) == 1 else None

    def sees_site(self, site_code: str) -> bool:  # noqa: D102
        return self.console or self.role is None or not self.role.site_bound or site_code in self.sites


def cli_actor(role: Role | None = Role.ADMIN, trial: str | None = None) -> Actor:
    """The operator at the server's console: recorded as cli:<os user>."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return Actor(username=f"cli:{who}", role=role, trial=trial, full_name=f"console user {who}",
                 client_addr="console", console=True)


SYSTEM = Actor(username="system", full_name="trialmgr", client_addr="internal")
