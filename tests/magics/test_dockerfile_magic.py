"""%%dockerfile in a real InteractiveShell: lint shown inline, syntax errors as one UsageError line."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError


def test_cell_is_stored_interpolated_and_linted(ipshell):
    ipshell.user_ns["version"] = "1.36"
    cell = ipshell.run_cell_magic("dockerfile", "web", "FROM nbops/busybox:{version}\nARG DB_PASSWORD\nRUN true\n")
    assert cell.text.startswith("FROM nbops/busybox:1.36")
    df = cell.findings
    assert {"NB002", "NB005"} <= set(df.rule)
    assert int(df[df.rule == "NB002"].line.iloc[0]) == 2
    html = cell._repr_html_()
    assert "NB002" in html and "DB_PASSWORD" in html
    magics = ipshell.magics_manager.registry["NbopsMagics"]
    assert magics.cells["web"] is cell


def test_no_interpolate_keeps_braces(ipshell):
    ipshell.user_ns["version"] = "9"
    cell = ipshell.run_cell_magic("dockerfile", "raw --no-interpolate", "FROM nbops/busybox:{version}\n")
    assert "{version}" in cell.text


def test_syntax_error_is_one_line_with_the_line_number(ipshell):
    with pytest.raises(UsageError) as info:
        ipshell.run_cell_magic("dockerfile", "bad", "FROM nbops/busybox:1\nRUN true\nCOPPY a b\n")
    msg = str(info.value)
    assert "line 3" in msg and "COPPY" in msg and "\n" not in msg
    magics = ipshell.magics_manager.registry["NbopsMagics"]
    assert "bad" not in magics.cells
