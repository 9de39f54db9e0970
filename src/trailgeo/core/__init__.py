"""The pure core: parsing, classification, counting, scoring and the alert model. No I/O, no boto3."""
