"""Parses a Prometheus text exposition (stdin) with the official prometheus_client parser and
prints every sample as one JSON object per line: {"family", "type", "name", "labels", "value"}.
Exits non-zero (with the parser's error) when the exposition does not parse."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
out = []
for family in text_string_to_metric_families(text):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name,
                    "labels": s.labels, "value": s.value})
for o in out:
    print(json.dumps(o))
