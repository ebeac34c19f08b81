#!/usr/bin/env python3
"""Check host/data/nanp-area-codes.tsv and host/data/country-zones.tsv.

Usage: python3 host/data/check_tables.py [DATA_DIR] [ZONEINFO_DIR]
Prints the problems found and exits 1, or prints a summary ending in "OK" and exits 0.
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = sys.argv[1] if len(sys.argv) > 1 else HERE
ZONEINFO = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/zoneinfo"

errors = []


def err(msg):
    errors.append(msg)


def rows(name):
    """Yield (line_number, [fields]) for each non-comment line; check the field count."""
    path = os.path.join(DATA, name)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.startswith("#"):
        err(f"{name}: must start with a header comment")
    for n, line in enumerate(text.split("\n"), 1):
        if line == "" or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            err(f"{name}:{n}: expected 3 tab-separated fields, got {len(fields)}: {line!r}")
            continue
        if any(f != f.strip() or f == "" for f in fields):
            err(f"{name}:{n}: empty field or stray whitespace: {line!r}")
        yield n, fields


def zone_ok(zone):
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*", zone):
        return False
    path = os.path.join(ZONEINFO, zone)
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"TZif"


def check_zones(name, n, zones, zones_seen):
    if zones == "-":
        return 0
    parts = zones.split(",")
    if len(set(parts)) != len(parts):
        err(f"{name}:{n}: repeated zone in {zones}")
    for z in parts:
        if z == "-":
            err(f"{name}:{n}: '-' mixed with zones: {zones}")
        elif not zone_ok(z):
            err(f"{name}:{n}: no such zone under {ZONEINFO}: {z}")
        zones_seen.add(z)
    return len(parts)


zones_seen = set()

# --- NANP area codes ---
NANP = "nanp-area-codes.tsv"
npas = {}
nanp_multi = nanp_nozone = 0
for n, (npa, zones, region) in rows(NANP):
    if not re.fullmatch(r"[2-9][0-9][0-9]", npa):
        err(f"{NANP}:{n}: NPA must be 3 digits with first digit 2-9: {npa!r}")
    elif npa[1:] == "11":
        err(f"{NANP}:{n}: N11 is a service code, not an area code: {npa}")
    elif npa[1] == "9":
        err(f"{NANP}:{n}: N9X codes are reserved for expansion: {npa}")
    if npa in npas:
        err(f"{NANP}:{n}: duplicate NPA {npa} (first on line {npas[npa]})")
    npas[npa] = n
    k = check_zones(NANP, n, zones, zones_seen)
    if k == 0:
        nanp_nozone += 1
    elif k > 1:
        nanp_multi += 1
    if not re.fullmatch(r"(NANP|[A-Z]{2}(,[A-Z]{2})*)", region):
        err(f"{NANP}:{n}: region must be 2-letter code(s) joined by ',' or NANP: {region!r}")

# Spot checks of well-known facts (guard against a bad regeneration).
EXPECT_NANP = {
    "212": "America/New_York", "646": "America/New_York", "332": "America/New_York",
    "917": "America/New_York", "876": "America/Jamaica", "915": "America/Denver",
    "808": "Pacific/Honolulu", "800": "-", "888": "-",
}
EXPECT_NANP_HAS = {"208": {"America/Boise", "America/Los_Angeles"},
                   "850": {"America/Chicago", "America/New_York"}}
nanp = {}
for _, (npa, zones, region) in rows(NANP):
    nanp[npa] = zones
for npa, z in EXPECT_NANP.items():
    if nanp.get(npa) != z:
        err(f"{NANP}: expected {npa} -> {z}, got {nanp.get(npa)}")
for npa, zs in EXPECT_NANP_HAS.items():
    if not zs <= set(nanp.get(npa, "").split(",")):
        err(f"{NANP}: expected {npa} to include {sorted(zs)}, got {nanp.get(npa)}")

# --- Country codes ---
CC = "country-zones.tsv"
codes = {}
cc_multi = cc_nozone = 0
cc = {}
for n, (code, zones, countries) in rows(CC):
    if not re.fullmatch(r"[1-9][0-9]{0,2}", code):
        err(f"{CC}:{n}: country code must be 1-3 digits, not starting with 0: {code!r}")
    if code == "1":
        err(f"{CC}:{n}: +1 belongs in {NANP}, not here")
    if code in codes:
        err(f"{CC}:{n}: duplicate country code {code} (first on line {codes[code]})")
    codes[code] = n
    cc[code] = zones
    k = check_zones(CC, n, zones, zones_seen)
    if k == 0:
        cc_nozone += 1
    elif k > 1:
        cc_multi += 1
    if not re.fullmatch(r"(-|[A-Z]{2}(,[A-Z]{2})*)", countries):
        err(f"{CC}:{n}: countries must be ISO alpha-2 codes joined by ',' or '-': {countries!r}")
    if (zones == "-") != (countries == "-"):
        err(f"{CC}:{n}: '-' zones go with '-' countries (global services) only")
# E.164 codes are prefix-free: no listed code may start another listed code.
for a in codes:
    for b in codes:
        if a != b and b.startswith(a):
            err(f"{CC}: code {a} is a prefix of code {b}")
EXPECT_CC = {"44": None, "353": None, "49": "Europe/Berlin", "86": "Asia/Shanghai",
             "91": "Asia/Kolkata", "7": None, "55": None, "61": None, "52": None, "62": None}
for code, z in EXPECT_CC.items():
    if code not in cc:
        err(f"{CC}: missing country code {code}")
    elif z is not None and cc[code] != z:
        err(f"{CC}: expected {code} -> {z}, got {cc[code]}")
for code in ("7", "55", "61", "52", "62"):
    if code in cc and len(cc[code].split(",")) < 2:
        err(f"{CC}: {code} should list several zones, got {cc[code]}")

if errors:
    for e in errors:
        print("ERROR:", e)
    print(f"{len(errors)} problem(s)")
    sys.exit(1)

print(f"{NANP}: {len(npas)} area codes ({len(npas) - nanp_nozone} geographic, "
      f"{nanp_multi} multi-zone, {nanp_nozone} non-geographic)")
print(f"{CC}: {len(codes)} country codes ({cc_multi} multi-zone, {cc_nozone} global services)")
print(f"{len(zones_seen)} distinct zones, all present under {ZONEINFO}")
print("OK")
