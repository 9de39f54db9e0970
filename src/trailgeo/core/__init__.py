"""The pure core: parsing, classification, counting, scoring and the alert model. No I/O, no boto3.

May import: `trailgeo.core`, `msgspec`, `pydantic`, `isal`; the standard library always.
"""
