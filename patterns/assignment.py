"""The persisted assignment: what keeps a tenant's, an AZ's and an admin's
identity independent of list order.

Every deploy exports the assignment as the stack output `assignment`; the next
run reads it back before planning (`__main__.py`, or `plan --previous FILE`
offline) and feeds it in here. Pure: settings + previous assignment in, the new
assignment and any problems out.

- Tenants keep their slot (the position of their subnets, NAT IPs, egress IPs
  and gateway ports) whatever happens to the others; a new tenant takes the
  lowest free slot; an explicit `slot` wins. A removed tenant's slot stays
  reserved, since the firewall may still trust its addresses, until it is
  listed in egress:releasedTenants.
- AZs keep their position (the subnet of every block they get), the same way;
  egress:releasedAvailabilityZones frees the position of a removed AZ.
- The control plane stays in the AZs the cluster was created with: EKS does not
  add subnets in other AZs to a cluster (aws/containers-roadmap#2330).
- Cluster admins keep the key of their access entry, which names the entry
  pulumi-eks creates (`<cluster>-<key>`, nodejs/eks/cluster/authenticationMode.ts
  createAccessEntries): a change of key would create a second entry for the same
  principal before deleting the first, which EKS refuses (ResourceInUseException).

Without a previous assignment (a new stack, or one deployed before the
assignment existed) everything is where list positions put it, exactly as
before: a tenant's slot is its `slot` or its list position, AZ positions
follow the list, every listed AZ is a control-plane AZ, and admin keys are
`admin-<position>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .settings import MAX_AZS, NAMESPACE, Problem, Settings

OUTPUT = "assignment"  # the stack output that carries it between runs
VERSION = 1
ADMIN_KEY = "admin-{}"


@dataclass(frozen=True)
class Assignment:
    # Tenant name -> slot, for listed tenants and removed ones still reserved.
    tenants: Mapping[str, int] = field(default_factory=dict)
    # AZ name -> position in every block, for listed AZs and removed ones still reserved.
    availability_zones: Mapping[str, int] = field(default_factory=dict)
    # The AZs the control plane was created with.
    control_plane_azs: tuple[str, ...] = ()
    # Admin principal ARN -> access entry key.
    admins: Mapping[str, str] = field(default_factory=dict)
    # The pattern deployed, so a change of pattern is known before it is made.
    pattern: str | None = None

    def to_output(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "tenants": dict(sorted(self.tenants.items(), key=lambda kv: kv[1])),
            "availabilityZones": dict(sorted(self.availability_zones.items(), key=lambda kv: kv[1])),
            "controlPlaneAvailabilityZones": list(self.control_plane_azs),
            "admins": dict(self.admins),
            "pattern": self.pattern,
        }

    @classmethod
    def from_output(cls, value: Any) -> Assignment | None:
        """The assignment a previous deploy exported, or None if it exported none."""
        if not value:
            return None
        if not isinstance(value, dict) or value.get("version") != VERSION:
            raise ValueError(f"the stack output '{OUTPUT}' is not an assignment this program wrote: {value!r}")
        return cls(
            tenants={str(k): int(v) for k, v in value["tenants"].items()},
            availability_zones={str(k): int(v) for k, v in value["availabilityZones"].items()},
            control_plane_azs=tuple(value["controlPlaneAvailabilityZones"]),
            admins={str(k): str(v) for k, v in value["admins"].items()},
            pattern=value.get("pattern"),
        )


def previous_assignment(outputs: Mapping[str, Any] | None) -> Assignment | None:
    """The assignment among a stack's outputs (empty on the first deploy)."""
    return Assignment.from_output((outputs or {}).get(OUTPUT))


def assign(settings: Settings, previous: Assignment | None) -> tuple[Assignment, list[Problem]]:
    problems: list[Problem] = []
    tenant_key = f"{NAMESPACE}:tenants"
    names = [t.name for t in settings.tenants]
    pinned = {t.name: t.slot for t in settings.tenants if t.slot is not None}
    # Slots pinned for shared NAT profiles are taken too, whatever the pattern,
    # so a switch to private-nat never finds a tenant on a profile's slot.
    held = {p.slot for p in settings.private_nat.profiles.values() if p.slot is not None}
    tenants = _positions(
        names, pinned, previous.tenants if previous else None, settings.released_tenants, held,
        limit=None, problems=problems,
        key=lambda i: f"{tenant_key}[{i}].slot",
        what="slot", owner=lambda i: f"tenants[{i}]", release_key=f"{NAMESPACE}:releasedTenants",
        meaning="it fixes the tenant's addresses, egress IPs or gateway ports",
    )

    az_key = f"{NAMESPACE}:availabilityZones"
    azs = list(settings.availability_zones)
    positions = _positions(
        azs, {}, previous.availability_zones if previous else None, settings.released_availability_zones,
        set(), limit=MAX_AZS, problems=problems, key=lambda i: az_key,
        what="AZ position", owner=lambda i: azs[i], release_key=f"{NAMESPACE}:releasedAvailabilityZones",
        meaning="it fixes the AZ's subnets in every block",
    )

    control_plane = previous.control_plane_azs if previous else tuple(azs)
    for az in control_plane:
        if az not in azs:
            problems.append(
                Problem(
                    az_key,
                    f"{az!r} is missing, but the EKS control plane was created in it and EKS cannot move a "
                    "control plane to other AZs: keep it listed (a new AZ only adds node and gateway capacity)",
                )
            )

    admins: dict[str, str] = {}
    known = dict(previous.admins) if previous else {}
    used = set(known.values())
    for arn in settings.cluster_admin_role_arns:  # listed once each (settings refuse duplicates)
        if previous is None:
            admins[arn] = ADMIN_KEY.format(len(admins))
        elif arn in known:
            admins[arn] = known[arn]
        else:
            admins[arn] = ADMIN_KEY.format(_lowest_free(used | set(admins.values()), ADMIN_KEY))
    return Assignment(tenants, positions, tuple(control_plane), admins, settings.pattern), problems


def _lowest_free(taken: Iterable[Any], pattern: str | None = None) -> int:
    taken = set(taken)
    n = 0
    while (pattern.format(n) if pattern else n) in taken:
        n += 1
    return n


def _positions(names, pinned, previous, released, held, *, limit, problems, key, what, owner,
               release_key, meaning) -> dict[str, int]:
    """Positions for `names`: pinned ones as pinned, previously placed ones where
    they were, new ones at the lowest free position. Removed names keep theirs
    (reserved) unless released. Without a previous assignment: pinned or list
    position, as before the assignment was persisted."""
    index_of = {name: i for i, name in enumerate(names)}
    for name in released:
        if name in index_of:
            problems.append(
                Problem(release_key, f"{name!r} is still listed in {key(index_of[name]).split('[')[0]}; "
                                     "release only what you removed")
            )
    if previous is None:
        result = {name: pinned.get(name, i) for i, name in enumerate(names)}
        reserved: dict[str, int] = {}
    else:
        reserved = {n: p for n, p in previous.items() if n not in index_of and n not in released}
        result = {n: pinned[n] if n in pinned else previous[n] for n in names if n in pinned or n in previous}
        taken = set(result.values()) | set(reserved.values()) | held
        for name in names:
            if name not in result:
                result[name] = _lowest_free(taken)
                taken.add(result[name])

    holder: dict[int, str] = {}
    for name in names:
        position = result[name]
        i = index_of[name]
        if position in holder:
            problems.append(
                Problem(key(i), f"{what} {position} is already taken by {owner(index_of[holder[position]])}; "
                                f"give each its own {what} ({meaning})")
            )
        elif (removed := next((n for n, p in reserved.items() if p == position), None)) is not None:
            problems.append(
                Problem(key(i), f"{what} {position} is reserved for the removed {removed!r}, whose addresses "
                                f"the firewall may still trust; pick another, or free it by adding {removed!r} "
                                f"to {release_key} once the firewall no longer trusts them")
            )
        elif limit is not None and position >= limit:
            problems.append(
                Problem(key(i), f"no free {what} for {name!r}: at most {limit} exist and removed ones stay "
                                f"reserved; add a removed one to {release_key} to free its {what}")
            )
        holder.setdefault(position, name)
    return {**result, **reserved}
