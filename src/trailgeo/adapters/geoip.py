"""GeoIP country lookups from a MaxMind-format database (GeoIP2/GeoLite2 or DB-IP layouts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import maxminddb

_CACHE_LIMIT = 200_000
# GeoIP2/GeoLite2 Country, City, Enterprise, Precision; DB-IP "country ipvAll", "city"...
_COUNTRY_KINDS = ("country", "city", "enterprise", "precision")


class GeoDatabaseError(RuntimeError):
    """The database is missing, unreadable or of a kind without country data."""


def country_from_record(record: Any) -> str | None:
    """The country where the address is used.

    GeoIP2/GeoLite2 records: ``country.iso_code`` (never ``registered_country``, which is where
    the block is registered and differs for many ranges). DB-IP Lite: ``country_code``.
    """
    if not isinstance(record, dict):
        return None
    country = record.get("country")
    if isinstance(country, dict):
        code = country.get("iso_code")
        return code.upper() if isinstance(code, str) and len(code) == 2 else None
    code = record.get("country_code")
    if isinstance(code, str) and len(code) == 2 and code.isalpha():
        return code.upper()
    return None


def city_from_record(record: Any) -> str | None:
    """``CC/City`` (a city name alone is ambiguous: Portland, US and Portland, AU). GeoIP2/GeoLite2
    City: ``city.names.en``; DB-IP City Lite: ``city``."""
    country = country_from_record(record)
    if country is None:
        return None
    city = record.get("city")
    if isinstance(city, dict):
        names = city.get("names")
        city = names.get("en") if isinstance(names, dict) else None
    if not isinstance(city, str) or not city.strip():
        return None
    return f"{country}/{city.strip()[:100]}"


@dataclass(slots=True)
class MaxMindGeoResolver:
    path: Path
    _reader: Any = field(init=False, repr=False)
    _cache: dict[str, str | None] = field(init=False, repr=False, default_factory=dict)
    _city_cache: dict[str, str | None] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not self.path.is_file():
            raise GeoDatabaseError(f"GeoIP database not found: {self.path}")
        try:
            # MODE_AUTO picks the C extension with mmap: the pure-Python reader is ~10x slower.
            self._reader = maxminddb.open_database(str(self.path), maxminddb.MODE_AUTO)
        except (OSError, maxminddb.InvalidDatabaseError, ValueError) as exc:
            raise GeoDatabaseError(f"cannot open GeoIP database {self.path}: {exc}") from exc
        kind = str(self._reader.metadata().database_type)
        if not any(word in kind.lower() for word in _COUNTRY_KINDS):
            self._reader.close()
            raise GeoDatabaseError(
                f"{self.path} is a {kind} database, without country data: use a Country or City database"
            )

    @property
    def description(self) -> str:
        meta = self._reader.metadata()
        return f"{meta.database_type} ({self.path.name}, built {meta.build_epoch})"

    def _lookup(self, ip: str) -> str | None:
        try:
            record = self._reader.get(ip)
        except (ValueError, maxminddb.InvalidDatabaseError):
            return None
        return country_from_record(record)

    def country(self, ip: str) -> str | None:
        """Each distinct address is looked up once per execution environment."""
        try:
            return self._cache[ip]
        except KeyError:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            found = self._cache[ip] = self._lookup(ip)
            return found

    @property
    def has_cities(self) -> bool:
        return "city" in str(self._reader.metadata().database_type).lower()

    def city(self, ip: str) -> str | None:
        """``CC/City`` of an address (a City database), looked up once per execution environment."""
        try:
            return self._city_cache[ip]
        except KeyError:
            if len(self._city_cache) >= _CACHE_LIMIT:
                self._city_cache.clear()
            try:
                record = self._reader.get(ip)
            except (ValueError, maxminddb.InvalidDatabaseError):
                record = None
            found = self._city_cache[ip] = city_from_record(record)
            return found

    def close(self) -> None:
        self._reader.close()
