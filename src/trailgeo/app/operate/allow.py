"""``trailgeo allow``: an ``[[allowed_countries]]`` entry appended to the tuning parameter (or a local
tuning file: ``trailgeo alerts allow --tuning-file``), written back only if nobody changed it meanwhile;
read and written through :class:`~trailgeo.ports.TuningStore`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from trailgeo.app.operate.common import OperateError
from trailgeo.app.operate.toml import entry_lines, entry_toml, to_toml
from trailgeo.core.tuning import (
    ACCOUNT_PATTERN,
    COUNTRY_PATTERN,
    DATE_PATTERN,
    AllowedCountries,
    Tuning,
    TuningError,
)
from trailgeo.ports import FILE_TYPE, StoredTuning, TuningStore

STANDARD_PARAMETER_BYTES = 4096  # SSM Standard tier; Advanced holds 8 KB
STORED_TYPES = frozenset({"String", "SecureString", FILE_TYPE})


def _same(a: Tuning, b: Tuning) -> bool:
    return a.model_dump(mode="json") == b.model_dump(mode="json")


def allowed_entry(
    *,
    principal: str,
    countries: Sequence[str],
    until: str | None = None,
    note: str = "",
    accounts: Sequence[str] | None = None,
    today: date | None = None,
) -> AllowedCountries:
    """The ``[[allowed_countries]]`` entry the options describe; :class:`OperateError` names a bad option."""
    if not principal or principal != principal.strip():
        raise OperateError(f"--principal {principal!r}: must be a non-empty glob without surrounding spaces")
    for country in countries:
        if not COUNTRY_PATTERN.match(country):
            raise OperateError(
                f"--country {country!r}: must be two upper-case letters (ISO 3166-1 alpha-2, e.g. PT, US)"
            )
    for account in accounts or ():
        if not ACCOUNT_PATTERN.match(account):
            raise OperateError(f"--account {account!r}: must be a 12-digit AWS account id")
    last_day: date | None = None
    if until is not None:
        last_day = calendar_date(until)
        if today is not None and last_day < today:
            raise OperateError(
                f"--until {until}: is in the past (today is {today.isoformat()} UTC): "
                "the entry would never apply"
            )
    try:
        return AllowedCountries(
            principals=(principal,),
            countries=tuple(dict.fromkeys(countries)),
            accounts=tuple(dict.fromkeys(accounts)) if accounts else None,
            until=last_day,
            note=note,
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise OperateError(f"invalid entry: {' '.join(str(exc).split())}") from None


def calendar_date(value: str) -> date:
    error = OperateError(f"--until {value!r}: must be a calendar date written YYYY-MM-DD")
    if not DATE_PATTERN.match(value):
        raise error
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise error from None


@dataclass(frozen=True, slots=True)
class TuningParameter:
    """What was read: the stored parameter (``None``: it does not exist yet, and would be created
    as ``create_as``) and its tuning; the stored version guards the write."""

    name: str
    stored: StoredTuning | None
    tuning: Tuning = field(default_factory=lambda: Tuning(version=1))
    create_as: str = "String"

    @property
    def version(self) -> int | None:
        return self.stored.version if self.stored else None

    @property
    def type(self) -> str:
        return self.stored.type if self.stored else self.create_as

    @property
    def text(self) -> str:
        return self.stored.text if self.stored else ""

    @property
    def key_id(self) -> str | None:
        return self.stored.key_id if self.stored else None

    @property
    def tier(self) -> str | None:
        return self.stored.tier if self.stored else None

    @property
    def is_json(self) -> bool:
        return self.text.lstrip().startswith("{")

    @property
    def label(self) -> str:
        """``SSM parameter NAME`` or ``tuning file PATH``: what the messages call it."""
        return f"tuning file {self.name}" if self.type == FILE_TYPE else f"SSM parameter {self.name}"


def read_tuning_parameter(store: TuningStore, name: str) -> TuningParameter:
    """The parameter, its version, type, KMS key and tier. A missing parameter reads as version None."""
    stored = store.read(name)
    if stored is None:
        return TuningParameter(name=name, stored=None)
    if stored.type not in STORED_TYPES:
        raise OperateError(
            f"SSM parameter {name}: is a {stored.type}; the tuning is a String or SecureString"
        )
    current = TuningParameter(name=name, stored=stored)
    source = current.label if stored.type == FILE_TYPE else f"{current.label} (version {stored.version})"
    try:
        tuning = Tuning.parse(stored.text, source=source)
    except TuningError as exc:
        raise OperateError(f"{exc} (fix it first: nothing was written)") from None
    return replace(current, tuning=tuning)


@dataclass(frozen=True, slots=True)
class TuningEdit:
    text: str
    tuning: Tuning
    layout: str  # created, appended (TOML comments and layout kept), json, or emitted (comments dropped)


def with_entry(current: TuningParameter, entry: AllowedCountries) -> TuningEdit:
    """The document with ``entry`` appended, validated whole by :meth:`Tuning.parse`.

    TOML: the entry is appended as a ``[[allowed_countries]]`` table, which keeps comments and layout;
    when that does not read back as intended (the list was written inline), the document is
    re-emitted by :func:`to_toml`. JSON stays JSON.
    """
    expected = current.tuning.model_copy(
        update={"allowed_countries": (*current.tuning.allowed_countries, entry)}
    )
    source = f"{current.label} (edited)"
    if current.version is None:
        text = "# trailgeo tuning (docs/tuning.md), created by `trailgeo allow`\n" + to_toml(expected)
        return TuningEdit(text, Tuning.parse(text, source=source), layout="created")
    if current.is_json:
        document = json.loads(current.text.removeprefix("\ufeff"))
        document.setdefault("allowed_countries", []).append(
            entry.model_dump(mode="json", exclude_defaults=True)
        )
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        return TuningEdit(text, Tuning.parse(text, source=source), layout="json")
    appended = current.text.rstrip("\n") + "\n\n" + entry_toml(entry)
    try:
        parsed = Tuning.parse(appended, source=source)
    except TuningError:
        parsed = None
    if parsed is not None and _same(parsed, expected):
        return TuningEdit(appended, parsed, layout="appended")
    text = to_toml(expected)
    return TuningEdit(text, Tuning.parse(text, source=source), layout="emitted")


def write_tuning_parameter(store: TuningStore, current: TuningParameter, text: str) -> int:
    """Write ``text`` if the parameter is still at the version read; returns the new version.
    Raises :class:`~trailgeo.ports.ConcurrentChangeError` when it changed in between."""
    tier = current.tier or "Standard"
    size = len(text.encode("utf-8"))
    if size > STANDARD_PARAMETER_BYTES and tier == "Standard" and current.type != FILE_TYPE:
        raise OperateError(
            f"SSM parameter {current.name}: the tuning would be {size} bytes, over the 4 KB of a Standard "
            "parameter: make it Advanced (8 KB) or deploy the tuning as a file (TUNING_FILE)"
        )
    return store.write(
        current.name,
        text,
        expected_version=current.version,
        type=current.type,
        key_id=current.key_id,
        tier=current.tier,
    )


@dataclass(frozen=True, slots=True)
class AllowResult:
    parameter: str
    type: str
    created: bool
    old_version: int | None
    new_version: int
    index: int
    entry: AllowedCountries
    layout: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "parameter": self.parameter,
            "type": self.type,
            "created": self.created,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "added": {
                "path": f"allowed_countries[{self.index}]",
                **self.entry.model_dump(mode="json", exclude_defaults=True),
            },
            "layout": self.layout,
        }


def allow(
    store: TuningStore,
    name: str,
    entry: AllowedCountries,
    *,
    create_as: str = "String",
    before_write: Callable[[TuningParameter], None] | None = None,
) -> AllowResult:
    """Read the tuning, append ``entry``, validate, write back unless it changed in between.

    ``create_as`` is the type of a parameter that does not exist yet (an existing one keeps its
    type, KMS key and tier). ``before_write`` runs between the read and the write (tests use it to
    change the parameter under our feet).
    """
    current, edit = propose_entry(store, name, entry, create_as=create_as)
    if before_write is not None:
        before_write(current)
    return write_entry(store, current, edit, entry)


def propose_entry(
    store: TuningStore, name: str, entry: AllowedCountries, *, create_as: str = "String"
) -> tuple[TuningParameter, TuningEdit]:
    """The tuning as read and the edit that appends ``entry``, validated whole; nothing written."""
    if create_as not in {"String", "SecureString", FILE_TYPE}:
        raise OperateError(f"--type {create_as!r}: must be String or SecureString")
    current = read_tuning_parameter(store, name)
    if current.version is None:
        current = replace(current, create_as=create_as)
    return current, with_entry(current, entry)


def write_entry(
    store: TuningStore, current: TuningParameter, edit: TuningEdit, entry: AllowedCountries
) -> AllowResult:
    """Write ``edit`` unless the tuning changed since ``current`` was read."""
    version = write_tuning_parameter(store, current, edit.text)
    return AllowResult(
        parameter=current.name,
        type=current.type,
        created=current.version is None,
        old_version=current.version,
        new_version=version,
        index=len(edit.tuning.allowed_countries) - 1,
        entry=entry,
        layout=edit.layout,
    )


_LAYOUTS = {
    "created": "a new TOML document",
    "appended": "appended: comments and layout kept",
    "json": "JSON kept, re-indented",
    "emitted": "the list was inline: document re-emitted, TOML comments dropped",
}


def format_allow(result: AllowResult, *, lines: bool = True) -> str:
    """What was written: the head, the added lines (``lines``: not after a diff showing them), how
    the document was edited and when it applies."""
    if result.type == FILE_TYPE:
        head = f"{'created' if result.created else 'updated'} tuning file {result.parameter}"
    elif result.created:
        head = f"created SSM parameter {result.parameter} ({result.type}), version {result.new_version}"
    else:
        head = (
            f"updated SSM parameter {result.parameter} ({result.type}): "
            f"version {result.old_version} -> {result.new_version}"
        )
    layout = _LAYOUTS.get(result.layout, result.layout)
    added = [f"+ {line}" for line in entry_lines(result.entry)]
    added[0] += f"  # allowed_countries[{result.index}]"
    if not lines:
        added = [f"added allowed_countries[{result.index}]"]
    applies = (
        "deployed as TUNING_FILE, runs apply it"
        if result.type == FILE_TYPE
        else "the next scheduled run applies it"
    )
    return "\n".join([head, *added, f"({layout}; {applies})"])
