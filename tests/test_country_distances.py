"""``trailgeo-tools country-distances``: the table of the impossible-travel evidence, from the
places an IP-to-city database locates each country's networks at."""

from __future__ import annotations

import json
from collections import Counter
from importlib import resources

from trailgeo.core.geography import CountryDistances
from trailgeo_tools.geography import MARGIN_KM, MIN_NETWORKS, UNIT_KM, distance_table, settled_cells


def test_given_a_stray_range_located_an_ocean_away_then_it_is_no_place_of_its_country() -> None:
    # Given Britain's networks in London, and two of its ranges located in New York
    cells = {
        "GB": Counter({(51, 0): 500, (40, -74): 2}),
        "US": Counter({(40, -74): 900}),
        "VA": Counter({(41, 12): 3}),
    }

    # When settled
    settled = settled_cells(cells)

    # Then New York is no British place, and a small country keeps its only town
    assert settled == {"GB": {(51, 0)}, "US": {(40, -74)}, "VA": {(41, 12)}}
    assert MIN_NETWORKS > 2


def test_given_located_places_then_the_table_holds_the_closest_less_the_margin() -> None:
    # Given London, New York, and Paris next door to London
    cells = {"GB": {(51, 0)}, "FR": {(48, 2)}, "US": {(40, -74)}}

    # When the table is made and read
    table = CountryDistances(distance_table(cells, "test"))

    # Then neighbours are 0, and London-New York is about 5,570 km less the margin, floored
    assert table.km("GB", "FR") == 0
    us_gb = table.km("US", "GB")
    assert us_gb is not None
    assert 5500 - MARGIN_KM - UNIT_KM <= us_gb <= 5700 - MARGIN_KM
    assert us_gb % UNIT_KM == 0
    assert table.km("GB", "US") == us_gb


def test_given_the_shipped_table_then_the_tool_made_it_from_dbip_city() -> None:
    text = resources.files("trailgeo").joinpath("data/country_distances.json").read_text(encoding="utf-8")
    document = json.loads(text)
    assert "dbip-city-mmdb" in document["source"]
    assert (document["margin_km"], document["unit_km"]) == (MARGIN_KM, UNIT_KM)
    assert len(document["countries"]) > 240
