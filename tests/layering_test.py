#!/usr/bin/env python3
"""The layering of the source tree, checked on every #include:

  common/  includes only common/ (and the generated proto/ wire types)
  client/  includes common/, proto/ and client/, never server/
  server/  includes common/, proto/ and server/, never client/
  proto/   includes only common/ and proto/

  layering_test.py SOURCE_DIR
"""
import os
import re
import sys

SRC = sys.argv[1]
ALLOWED = {
    "common": {"common", "proto"},
    "client": {"common", "proto", "client"},
    "server": {"common", "proto", "server"},
    "proto": {"common", "proto"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"/]+)/')
bad = []
files = 0
for top, allowed in ALLOWED.items():
    for root, _, names in os.walk(os.path.join(SRC, top)):
        for name in names:
            if not name.endswith((".h", ".cc", ".in")):
                continue
            path = os.path.join(root, name)
            files += 1
            with open(path, encoding="utf-8") as f:
                for no, line in enumerate(f, 1):
                    m = INCLUDE.match(line)
                    if m and m.group(1) in ALLOWED and m.group(1) not in allowed:
                        bad.append("%s:%d: %s/ includes %s" % (
                            os.path.relpath(path, SRC), no, top, line.strip()))
for b in bad:
    print("FAIL  " + b)
print("%d files checked, %d includes across layers" % (files, len(bad)))
sys.exit(1 if bad else 0)
