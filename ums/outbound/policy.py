"""Who may send through the e-mail gateways and which numbers they may reach, from ``[fax_gateway]``.

What it does
------------
The fax and the SMS gateway share one policy: the senders, the deny list and the dial plan of
``[fax_gateway]`` (a company decides once who may spend money on its lines).  :func:`sender_policy`,
:func:`dial_plan` and :func:`deny_list` build them from the configuration; :func:`configured` turns
a ``ValueError`` of a builder into one that names the configuration file and key.

How it works
------------
Plain constructors of :mod:`ums.outbound.addresses` and :mod:`ums.outbound.numbers`; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ums.config import Config, DialFormat
from ums.outbound.addresses import SenderPolicy
from ums.outbound.numbers import DenyList, DialPlan, deny_rules

__all__ = ["configured", "deny_list", "dial_plan", "sender_policy"]

T = TypeVar("T")


def configured(config: Config, key: str, make: Callable[[], T]) -> T:
    """``make()``; a ``TypeError``/``ValueError`` becomes ``ValueError("<file>: <key>: <reason>")``."""
    try:
        return make()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{config.source}: {key}: {exc}") from None


def sender_policy(config: Config) -> SenderPolicy:
    g = config.fax_gateway
    return configured(
        config,
        "fax_gateway.senders",
        lambda: SenderPolicy(allow=g.senders, deny=g.deny_senders, allow_authenticated=g.allow_authenticated),
    )


def dial_plan(
    config: Config, *, dial_format: DialFormat | None = None, outside_line: bool = True
) -> DialPlan:
    """The dial plan; SMS passes ``dial_format="e164"`` and ``outside_line=False`` (no PBX digits)."""
    g = config.fax_gateway
    return configured(
        config,
        "fax_gateway",
        lambda: DialPlan(
            country_code=g.country_code,
            area_code=g.area_code,
            national_prefix=g.national_prefix,
            international_prefix=g.international_prefix,
            outside_line=g.outside_line if outside_line else "",
            dial_format=dial_format or g.dial_format,
        ),
    )


def deny_list(config: Config) -> DenyList:
    g = config.fax_gateway
    return configured(config, "fax_gateway.deny", lambda: DenyList(deny_rules(g.deny), allow=g.allow))
