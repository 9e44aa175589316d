# `databuilder`: ehrQL's name before its rename, still importable in the ehrql:v0 image
# (late 2023), where its modules re-export ehrQL's. Studies of that time import from it
# (`from databuilder.ehrql import case, when`). quarry's own code.
