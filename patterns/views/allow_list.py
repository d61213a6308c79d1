"""The allow-list as files the firewall team imports or pastes: one row per
source x destination x port, in a stable order."""

from __future__ import annotations

import csv
import io
import ipaddress
import json
from dataclasses import dataclass

from ..plan import Plan

CSV_HEADER = ("tenant", "namespace", "source", "destination_name", "destination_cidr", "host", "protocol", "port")


@dataclass(frozen=True, order=True)
class Row:
    tenant: str
    namespace: str
    source: str
    destination_name: str
    destination_cidr: str
    host: str
    protocol: str  # the L4 protocol a firewall rule names: every upstream is reached over TCP
    port: int
    shared_with: tuple[str, ...] = ()


def rows(plan: Plan) -> list[Row]:
    """Sorted by tenant, then source and destination by address, then port, so
    the file does not change when tenants or upstreams are listed in another order."""
    found = [
        Row(entry.tenant, entry.namespace, source, d.name, d.cidr, d.host or "", "tcp", port, entry.shared_with)
        for entry in plan.allow_list
        for source in entry.sources
        for d in entry.destinations
        for port in d.ports
    ]
    return sorted(
        set(found),
        key=lambda r: (r.tenant, ipaddress.IPv4Network(r.source), ipaddress.IPv4Network(r.destination_cidr),
                       r.destination_name, r.port),
    )


def to_csv(plan: Plan) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in rows(plan):
        writer.writerow([getattr(row, column) for column in CSV_HEADER])
    return out.getvalue()


def to_json(plan: Plan) -> str:
    return json.dumps(plan.allow_list_json(), indent=2) + "\n"


def to_markdown(plan: Plan) -> str:
    """A table to paste into a change request; a last column says which other
    tenants leave from the same source."""
    header = [*CSV_HEADER, "source shared with"]
    lines = [
        f"Egress allow-list of stack `{plan.stack}` (pattern `{plan.settings.pattern}`)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows(plan):
        cells = [str(getattr(row, column)) for column in CSV_HEADER] + [", ".join(row.shared_with) or "-"]
        lines.append("| " + " | ".join(cell or "-" for cell in cells) + " |")
    return "\n".join(lines) + "\n"


FORMATS = {"csv": to_csv, "json": to_json, "md": to_markdown}
