"""Who is calling: the caller a request or a socket was authenticated as."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """Who is calling, and with which token."""

    user_id: str
    is_admin: bool
    token_id: str
    # Authenticated by ADMIN_TOKEN from the environment (it cannot be revoked by a call).
    env_token: bool = False

    @property
    def owner(self) -> str | None:
        """The user filter for reads: admins see every user's data (None), others their own."""
        return None if self.is_admin else self.user_id
