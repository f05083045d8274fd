"""JUnit XML, the format CI systems (GitLab, Jenkins, GitHub test reporters) read.

Generic: any command turns its checks into (testcase name, passed, message, details) tuples.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from onnxkit.foundation.files import write_text_atomic
from onnxkit.results import shown

Case = tuple[str, bool, str, str]  # (name, passed, one-line message, details)
# A case may carry a fifth item, True for a check that did not run (JUnit's <skipped>): a
# target absent from the machine must not read as a passed test.

# XML 1.0 cannot carry most control characters; a model's output name could hold them.
_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(text: str) -> str:
    return _BAD_XML.sub("\ufffd", str(text))


def _line(text: str) -> str:
    """A one-line field (names, messages): a line break in a model-chosen name must not
    show as a second line in a CI report."""
    return _clean(shown(text))


def junit_xml(
    suite: str,
    cases: Sequence[Case],
    *,
    classname: str | None = None,
    properties: dict[str, str] | None = None,
    time_s: float | None = None,
) -> str:
    """One <testsuite> inside <testsuites>; a failing case gets a <failure> element whose
    ``message`` is the one-line reason and whose text is the details."""
    failures = sum(1 for c in cases if not c[1])
    skipped = sum(1 for c in cases if c[1] and len(c) > 4 and c[4])
    attrs = {"name": _line(suite), "tests": str(len(cases)), "failures": str(failures), "errors": "0",
             "skipped": str(skipped)}
    if time_s is not None:
        attrs["time"] = f"{time_s:.3f}"
    root = ET.Element("testsuites", {k: v for k, v in attrs.items() if k != "name"} | {"name": _line(suite)})
    ts = ET.SubElement(root, "testsuite", attrs)
    if properties:
        props = ET.SubElement(ts, "properties")
        for k, v in properties.items():
            ET.SubElement(props, "property", {"name": _line(k), "value": _line(v)})
    for name, passed, message, details, *rest in cases:
        tc = ET.SubElement(ts, "testcase", {"name": _line(name), "classname": _line(classname or suite)})
        if passed and rest and rest[0]:
            ET.SubElement(tc, "skipped", {"message": _line(message or "skipped")})
            if details:
                ET.SubElement(tc, "system-out").text = _clean(details)
        elif not passed:
            f = ET.SubElement(tc, "failure", {"message": _line(message or "failed"), "type": "failure"})
            f.text = _clean(details)
        elif details:
            ET.SubElement(tc, "system-out").text = _clean(details)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(dest: str | Path, suite: str, cases: Sequence[Case], **kwargs) -> Path:
    """Write the JUnit file atomically (a CI job never reads half a report)."""
    return write_text_atomic(dest, junit_xml(suite, cases, **kwargs))
