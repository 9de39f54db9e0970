"""GeoIP lookups from MaxMind-format databases: the country (and city) of an address from a
GeoIP2/GeoLite2 or DB-IP database, and its autonomous system from an optional ASN database
(GeoLite2-ASN, GeoIP2-ISP, or the layer's ``asn.mmdb`` built from @ip-location-db/asn)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import maxminddb

from trailgeo.core.networks import MAX_ORGANIZATION, AsnInfo

_CACHE_LIMIT = 200_000
# GeoIP2/GeoLite2 Country, City, Enterprise, Precision; DB-IP "country ipvAll", "city"...
_COUNTRY_KINDS = ("country", "city", "enterprise", "precision")
# GeoLite2-ASN, GeoIP2-ISP, the layer's "ip-location-db-ASN": databases with AS numbers.
_ASN_KINDS = ("asn", "isp")
_ASN_CACHE_LIMIT = 20_000  # addresses of alerts only: a few hundred a run at most


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


def asn_from_record(record: Any) -> AsnInfo | None:
    """GeoLite2-ASN / GeoIP2-ISP layout (the layer's ASN database writes the same):
    ``autonomous_system_number`` and ``autonomous_system_organization``."""
    if not isinstance(record, dict):
        return None
    number = record.get("autonomous_system_number")
    if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 2**32:
        return None
    organization = record.get("autonomous_system_organization")
    text = organization.strip()[:MAX_ORGANIZATION].strip() if isinstance(organization, str) else ""
    return AsnInfo(number=number, organization=text)


def open_asn_database(path: Path) -> Any:
    """A reader of an ASN database; GeoDatabaseError when it is missing, unreadable or no ASN database."""
    if not path.is_file():
        raise GeoDatabaseError(f"ASN database not found: {path}")
    try:
        reader = maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
    except (OSError, maxminddb.InvalidDatabaseError, ValueError) as exc:
        raise GeoDatabaseError(f"cannot open ASN database {path}: {exc}") from exc
    kind = str(reader.metadata().database_type)
    if not any(word in kind.lower() for word in _ASN_KINDS):
        reader.close()
        raise GeoDatabaseError(f"{path} is a {kind} database, without AS numbers: use an ASN database")
    return reader


@dataclass(slots=True)
class MaxMindGeoResolver:
    """``path``: the country (or city) database, required. ``asn_path``: an ASN database, optional;
    one that cannot be opened does not stop the country detection: ``asn_error`` says why, the
    runtime logs it at cold start (app/runtime.py), and ``asn`` answers None."""

    path: Path
    asn_path: Path | None = None
    asn_error: str | None = field(init=False, default=None)
    _reader: Any = field(init=False, repr=False)
    _asn_reader: Any = field(init=False, repr=False, default=None)
    _cache: dict[str, str | None] = field(init=False, repr=False, default_factory=dict)
    _city_cache: dict[str, str | None] = field(init=False, repr=False, default_factory=dict)
    _asn_cache: dict[str, AsnInfo | None] = field(init=False, repr=False, default_factory=dict)

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
        if self.asn_path is not None:
            try:
                self._asn_reader = open_asn_database(self.asn_path)
            except GeoDatabaseError as exc:
                self.asn_error = str(exc)

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

    @property
    def has_asn(self) -> bool:
        return self._asn_reader is not None

    def asn(self, ip: str) -> AsnInfo | None:
        """The autonomous system of an address, looked up once per execution environment; None
        without an ASN database, for no address, or one the database lacks."""
        if self._asn_reader is None:
            return None
        try:
            return self._asn_cache[ip]
        except KeyError:
            if len(self._asn_cache) >= _ASN_CACHE_LIMIT:
                self._asn_cache.clear()
            try:
                record = self._asn_reader.get(ip)
            except (ValueError, TypeError, maxminddb.InvalidDatabaseError):
                record = None
            found = self._asn_cache[ip] = asn_from_record(record)
            return found

    @property
    def asn_description(self) -> str:
        if self._asn_reader is None:
            return self.asn_error or "no ASN database"
        meta = self._asn_reader.metadata()
        name = self.asn_path.name if self.asn_path is not None else "?"
        return f"{meta.database_type} ({name}, built {meta.build_epoch})"

    def close(self) -> None:
        self._reader.close()
        if self._asn_reader is not None:
            self._asn_reader.close()
