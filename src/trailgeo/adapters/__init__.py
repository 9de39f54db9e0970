"""Adapters: the only modules that talk to AWS, the file system or the GeoIP database."""
