"""Which source a trigger's ``serverAddress`` may read from.

A ScaledObject names its Prometheus with the ``serverAddress`` metadata key.  Letting any
address through would let whoever can create a ScaledObject make the scaler send requests
anywhere, so only the default Prometheus and an explicit allowlist are accepted; anything
else is :class:`~helios_scaler.errors.SourceNotAllowed` (``PERMISSION_DENIED``).

Credentials are bound to their address: the bearer token, basic auth and client certificate
of the settings go to ``prometheus_url`` only, never to an allowlisted address (a
ScaledObject could otherwise pick which server receives them).  Allowlisted sources share
the CA file, the timeout and the answer size limit.  Redirects are never followed, so a
request cannot leave the address it was sent to.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from helios_scaler.errors import SourceNotAllowed
from helios_scaler.source.base import Source
from helios_scaler.source.prometheus import PrometheusSource, normalize_url

if TYPE_CHECKING:
    from helios_scaler.config import Settings

logger = logging.getLogger(__name__)


class SourceResolver:
    """Maps a trigger's ``serverAddress`` to a configured :class:`Source`.

    ``default`` serves triggers without a ``serverAddress`` and also answers to its own
    ``name`` (a Prometheus source's name is its normalized URL).  ``allowed`` maps other
    addresses to their sources.  Addresses are compared after :func:`normalize_url`
    (trailing slashes dropped, scheme and host lower-cased).
    """

    def __init__(self, default: Source | None, allowed: Mapping[str, Source]) -> None:
        self.default = default
        table: dict[str, Source] = {normalize_url(address): source for address, source in allowed.items()}
        if default is not None:
            table.setdefault(normalize_url(default.name), default)
        self._table: Mapping[str, Source] = MappingProxyType(table)

    def close(self) -> None:
        """Close every source (at shutdown)."""
        for source in {id(source): source for source in self._table.values()}.values():
            source.close()

    @classmethod
    def from_settings(cls, settings: Settings) -> SourceResolver:
        """Prometheus sources for ``prometheus_url`` and every ``allowed_server_addresses`` entry.

        Only the ``prometheus_url`` source gets the credentials (bearer token, basic auth,
        client certificate); allowlisted sources get none.  All share the CA file, the
        timeout and the answer size limit.  An allowlisted address equal to the default URL
        reuses the default source (and so its credentials).
        """
        default = (
            None
            if settings.prometheus_url is None
            else PrometheusSource.from_settings(settings.prometheus_url, settings)
        )
        has_credentials = any(
            value is not None
            for value in (
                settings.prometheus_bearer_token_file,
                settings.prometheus_username,
                settings.prometheus_cert_file,
            )
        )
        if default is None and has_credentials:
            logger.warning(
                "Prometheus credentials are configured but prometheus_url is not: they are sent nowhere "
                "(allowlisted addresses never get credentials)"
            )
        allowed: dict[str, Source] = {}
        for address in settings.allowed_server_addresses:
            key = normalize_url(address)
            if default is not None and key == default.name:
                continue
            if key not in allowed:
                allowed[key] = PrometheusSource.from_settings(address, settings, credentials=False)
        logger.info(
            "Prometheus sources: default=%s, allowed=%s",
            default.name if default is not None else "none",
            ", ".join(allowed) or "none",
        )
        return cls(default, allowed)

    @property
    def allowed_addresses(self) -> tuple[str, ...]:
        """Every address a trigger may name, sorted (the default's included)."""
        return tuple(sorted(self._table))

    def resolve(self, server_address: str | None) -> Source:
        """The source for a trigger's ``serverAddress`` (``None`` or blank: the default).

        Raises :class:`~helios_scaler.errors.SourceNotAllowed` when no default is configured
        and the address is missing, or when the address is not on the allowlist.
        """
        if server_address is None or not server_address.strip():
            if self.default is None:
                raise SourceNotAllowed(
                    "no default Prometheus is configured: the trigger must set serverAddress "
                    "(to one of: " + (", ".join(self.allowed_addresses) or "none are allowed") + ") "
                    "or the server must be started with --prometheus-url"
                )
            return self.default
        source = self._table.get(normalize_url(server_address))
        if source is None:
            allowed = ", ".join(self.allowed_addresses) or "none"
            raise SourceNotAllowed(
                f"serverAddress {server_address.strip()!r} is not allowed; allowed addresses: {allowed} "
                "(add it to --allowed-server-addresses to permit it)"
            )
        return source
