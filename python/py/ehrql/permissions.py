# `claim_permissions()`: the permissions a definition claims for restricted tables, which
# quarry checks (as ehrQL does for dummy data) before it runs.

import _quarry

from ehrql import _lazy
from ehrql.exceptions import EHRQLPermissionError


def claim_permissions(*permissions):
    _quarry.claim_permissions([str(p) for p in permissions])


def get_claimed_permissions():
    return tuple(_quarry.claimed_permissions())


_lazy.attach(
    globals(),
    imported=["json"],
    internal=[
        "qm", "get_table_nodes", "RegistryError", "get_id_for_object", "CLAIMED_PERMISSIONS", "clear_claimed_permissions",
        "enforce_permissions", "enforce_permissions_for_dummy_data", "parse_permissions", "get_missing_permissions",
        "get_required_permissions", "format_permission_list", "format_table_list", "get_public_name_for_table",
    ],
)
