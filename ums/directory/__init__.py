"""ums.directory: caller names from a number (config table, CSV file; LDAP-ready).

See :mod:`ums.directory.lookup`.
"""

from ums.directory.lookup import (
    Directory,
    DirectorySettings,
    DirectorySource,
    Lookup,
    NumberPlan,
    TableSource,
    display_number,
    load_directory,
    normalise_number,
)

__all__ = [
    "Directory",
    "DirectorySettings",
    "DirectorySource",
    "Lookup",
    "NumberPlan",
    "TableSource",
    "display_number",
    "load_directory",
    "normalise_number",
]
