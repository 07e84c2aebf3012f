"""Parses the Prometheus text exposition format on stdin with the reference parser (the official
Python client's), printing every sample as JSON: [{"name", "labels", "value"}, ...], histogram
samples as their _bucket/_sum/_count series. Used by metrics.test.mjs."""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        v = s.value
        out.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels,
                     "value": None if math.isnan(v) else ("+Inf" if v == math.inf else v)})
json.dump(out, sys.stdout)
