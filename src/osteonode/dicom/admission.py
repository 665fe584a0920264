"""Association admission: who may associate with the node, and how many at once.

The policy (:class:`osteonode.config.AssociationPolicy`) is decided here, apart from pynetdicom, so
it can be read and tested as plain rules:

* the called AE title must be the node's (unless ``require_called_ae`` is off);
* the calling AE title and source address must match an allow-list entry: an entry names one
  title or ``*`` (any), optionally pinned to a host name, address or network;
* only *established* associations count against ``max_associations`` and against the per-caller
  cap (an entry's ``max_associations``, else ``max_associations_per_caller``). A connection that has
  not sent its A-ASSOCIATE-RQ yet holds no slot: the SCP closes it after ``request_timeout_s``, so
  idle or slow peers cannot lock out the modalities.

:class:`Admission` keeps the count of admitted associations, each under its calling AE title, and
takes the decision and the slot under one lock, so two requests arriving together cannot both take
the last slot.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
import threading
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

from osteonode.config import ANY_CALLING_AE, AssociationPolicy

__all__ = [
    "Admission",
    "AssociationRefusal",
    "CallerRule",
    "RefusalReason",
    "check_association",
    "resolve_allow_list",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RefusalReason(enum.StrEnum):
    """Why an association request was rejected; recorded on the ``refused`` Event."""

    CALLED_AE_NOT_RECOGNISED = "called_ae_not_recognised"
    CALLING_AE_NOT_RECOGNISED = "calling_ae_not_recognised"
    CALLING_HOST_NOT_ALLOWED = "calling_host_not_allowed"
    TOO_MANY_ASSOCIATIONS = "too_many_associations"
    TOO_MANY_FROM_CALLER = "too_many_from_caller"


#: A-ASSOCIATE-RJ (result, source, diagnostic) for each reason (PS3.8 Table 9-21).
_REJECT_PARAMETERS: Mapping[RefusalReason, tuple[int, int, int]] = {
    # rejected-permanent, DUL service-user, called-AE-title-not-recognized
    RefusalReason.CALLED_AE_NOT_RECOGNISED: (0x01, 0x01, 0x07),
    # rejected-permanent, DUL service-user, calling-AE-title-not-recognized
    RefusalReason.CALLING_AE_NOT_RECOGNISED: (0x01, 0x01, 0x03),
    # A caller at a source address it is not allowed from is, for DICOM, an unrecognised calling AE.
    RefusalReason.CALLING_HOST_NOT_ALLOWED: (0x01, 0x01, 0x03),
    # rejected-transient, DUL service-provider (presentation), local-limit-exceeded
    RefusalReason.TOO_MANY_ASSOCIATIONS: (0x02, 0x03, 0x02),
    RefusalReason.TOO_MANY_FROM_CALLER: (0x02, 0x03, 0x02),
}


@dataclass(frozen=True)
class AssociationRefusal:
    """The node's decision to reject an association request.

    Parameters
    ----------
    reason
        The coded reason.
    detail
        A sentence for the log and the Event row.
    """

    reason: RefusalReason
    detail: str

    @property
    def reject_parameters(self) -> tuple[int, int, int]:
        """The A-ASSOCIATE-RJ ``(result, source, diagnostic)`` to send."""
        return _REJECT_PARAMETERS[self.reason]


@dataclass(frozen=True)
class CallerRule:
    """One allow-list entry with its host resolved.

    Parameters
    ----------
    ae_title
        The calling AE title, or ``*`` for any.
    networks
        The source networks it admits (a single address is a /32 or /128 network); ``None`` for any.
    max_associations
        The cap on associations of one calling AE title admitted by this entry; ``None`` for the
        policy's ``max_associations_per_caller``.
    """

    ae_title: str
    networks: tuple[Network, ...] | None = None
    max_associations: int | None = None

    def admits(self, calling_ae_title: str, address: str) -> bool:
        """Whether this entry lets ``calling_ae_title`` call from ``address``."""
        if self.ae_title not in (ANY_CALLING_AE, calling_ae_title):
            return False
        if self.networks is None:
            return True
        parsed = _parse_address(address)
        return parsed is not None and any(
            parsed.version == network.version and parsed in network for network in self.networks
        )


def resolve_allow_list(policy: AssociationPolicy) -> tuple[CallerRule, ...]:
    """The allow-list with each entry's host resolved to networks.

    A host that is an address or a network (``10.1.2.0/24``) is taken as it is; a name is resolved
    to its addresses now, once, so the node never waits on DNS while a modality waits on it.

    Parameters
    ----------
    policy
        The configured association policy.

    Returns
    -------
    tuple of CallerRule
        The entries, in the configured order.

    Raises
    ------
    ValueError
        If a host name cannot be resolved (the node refuses to start with an allow-list it cannot
        enforce).
    """
    rules = []
    for caller in policy.allowed_callers:
        title = caller.ae_title.strip()
        networks: tuple[Network, ...] | None = None
        if caller.host is not None:
            networks = _networks_of(caller.host, title)
        rules.append(CallerRule(title, networks, caller.max_associations))
    return tuple(rules)


def _networks_of(host: str, title: str) -> tuple[Network, ...]:
    try:
        return (_unmapped_network(ipaddress.ip_network(host.strip(), strict=False)),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ValueError(
            f"association.allowed_callers: host {host!r} of {title!r} cannot be resolved: "
            f"{error.strerror}"
        ) from error
    addresses = {_parse_address(str(info[4][0])) for info in infos}
    return tuple(ipaddress.ip_network(address) for address in addresses if address is not None)


def _unmapped_network(network: Network) -> Network:
    """``::ffff:10.0.0.0/104`` is the IPv4 network ``10.0.0.0/8``."""
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
        mapped = network.network_address.ipv4_mapped
        return ipaddress.IPv4Network(f"{mapped}/{max(network.prefixlen - 96, 0)}", strict=False)
    return network


def _parse_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """One form per address, so ``::ffff:127.0.0.1`` and ``127.0.0.1`` compare equal."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def check_association(
    policy: AssociationPolicy,
    *,
    node_ae_title: str,
    called_ae_title: str,
    calling_ae_title: str,
    calling_host: str,
    established: int = 0,
    established_by_caller: int = 0,
    rules: Sequence[CallerRule] | None = None,
) -> AssociationRefusal | None:
    """Decide whether the node accepts an association request.

    Parameters
    ----------
    policy
        The configured association policy.
    node_ae_title
        The node's own AE title.
    called_ae_title, calling_ae_title
        The titles in the A-ASSOCIATE-RQ (surrounding spaces are ignored; titles are case-sensitive
        as PS3.5 defines them).
    calling_host
        The peer's IP address.
    established
        Associations the node has already admitted and that are still open (not this one).
    established_by_caller
        Of those, the ones with this calling AE title.
    rules
        The allow-list with host names resolved (:func:`resolve_allow_list`); resolved from the
        policy when not given.

    Returns
    -------
    AssociationRefusal or None
        ``None`` when the request is accepted.
    """
    called = called_ae_title.strip()
    calling = calling_ae_title.strip()
    if policy.require_called_ae and called != node_ae_title.strip():
        return AssociationRefusal(
            RefusalReason.CALLED_AE_NOT_RECOGNISED,
            f"called AE title {called!r} is not this node's {node_ae_title.strip()!r}",
        )
    rules = resolve_allow_list(policy) if rules is None else rules
    rule = next(
        (rule for rule in _by_precedence(rules, calling) if rule.admits(calling, calling_host)),
        None,
    )
    if rule is None:
        if any(candidate.ae_title == calling for candidate in rules):
            return AssociationRefusal(
                RefusalReason.CALLING_HOST_NOT_ALLOWED,
                f"calling AE title {calling!r} is not allowed from {calling_host}",
            )
        return AssociationRefusal(
            RefusalReason.CALLING_AE_NOT_RECOGNISED,
            f"calling AE title {calling!r} from {calling_host} is not in association.allowed_callers",
        )
    if established >= policy.max_associations:
        return AssociationRefusal(
            RefusalReason.TOO_MANY_ASSOCIATIONS,
            f"{established} associations already open "
            f"(association.max_associations = {policy.max_associations})",
        )
    per_caller = rule.max_associations or policy.max_associations_per_caller
    if per_caller is not None and established_by_caller >= per_caller:
        return AssociationRefusal(
            RefusalReason.TOO_MANY_FROM_CALLER,
            f"{calling!r} already holds {established_by_caller} associations (its limit is {per_caller})",
        )
    return None


def _by_precedence(rules: Sequence[CallerRule], calling: str) -> list[CallerRule]:
    """Entries naming the caller's own title first, so their limits apply before a wildcard's."""
    return sorted(rules, key=lambda rule: rule.ae_title == ANY_CALLING_AE)


class Admission:
    """The admitted associations, and the decision to admit one more.

    Parameters
    ----------
    policy
        The configured association policy.
    node_ae_title
        The node's own AE title.
    is_open
        Whether an admitted association (its key) is still open; an association whose end was
        missed is then not counted forever.

    Raises
    ------
    ValueError
        If an allow-list host name cannot be resolved.
    """

    def __init__(
        self,
        policy: AssociationPolicy,
        node_ae_title: str,
        is_open: Callable[[Hashable], bool] = lambda key: True,
    ) -> None:
        if not isinstance(policy, AssociationPolicy):
            raise TypeError(f"policy must be an AssociationPolicy, not {type(policy).__name__}")
        self._policy = policy
        self._node_ae_title = node_ae_title
        self._rules = resolve_allow_list(policy)
        self._is_open = is_open
        self._admitted: dict[Hashable, str] = {}
        self._lock = threading.Lock()

    def request(
        self, key: Hashable, *, called_ae_title: str, calling_ae_title: str, calling_host: str
    ) -> AssociationRefusal | None:
        """Decide on an association request; an accepted one holds a slot until :meth:`end`.

        Returns
        -------
        AssociationRefusal or None
            ``None`` when the request is accepted.
        """
        calling = calling_ae_title.strip()
        with self._lock:
            for stale in [other for other in self._admitted if not self._is_open(other)]:
                del self._admitted[stale]
            by_caller = Counter(self._admitted.values())
            refusal = check_association(
                self._policy,
                node_ae_title=self._node_ae_title,
                called_ae_title=called_ae_title,
                calling_ae_title=calling,
                calling_host=calling_host,
                established=len(self._admitted),
                established_by_caller=by_caller[calling],
                rules=self._rules,
            )
            if refusal is None:
                self._admitted[key] = calling
        return refusal

    def end(self, key: Hashable) -> None:
        """Free the slot of an association that has ended (nothing happens for one never admitted)."""
        with self._lock:
            self._admitted.pop(key, None)

    @property
    def established(self) -> int:
        """How many admitted associations are open."""
        with self._lock:
            return len(self._admitted)
