"""Features by name: which of a dataset's features a model reads, and in which order.

A dataset names its features in ``metadata["feature_names"]`` (``nri-pyro simulate`` and
:meth:`~nri_pyro.data.dataset.TrajectoryDataset.select_features` write them); data without
names (the reference layout, a user's arrays) take their system's names where they hold
exactly that system's features. Features are then picked by name, never by position, and
data that do not hold the features asked for are refused, naming both lists.
"""

from __future__ import annotations

from collections.abc import Sequence

from nri_pyro.data.dataset import TrajectoryDataset
from nri_pyro.data.systems import SYSTEMS


def feature_names(data: TrajectoryDataset, system: str | None = None) -> list[str] | None:
    """The names of ``data``'s features, in their order; None where they are unknown.

    From the metadata's ``feature_names`` (those of the features kept, where an older
    :meth:`~TrajectoryDataset.select_features` left the full list and ``features_kept``),
    else the names of the data's system (``system`` where the data name none of the
    registry's) when the data hold as many features as it has.
    """
    count = data.num_features
    names = data.metadata.get("feature_names")
    if names is not None:
        names = [str(n) for n in names]
        kept = data.metadata.get("features_kept")
        if len(names) != count and kept is not None and len(kept) == count:
            if all(isinstance(i, int) and 0 <= i < len(names) for i in kept):
                names = [names[i] for i in kept]
        if len(names) != count:
            raise ValueError(
                f"the data's metadata name {len(names)} features ({', '.join(names)}), but "
                f"their trajectories have {count}: fix feature_names in their meta.json (or "
                "metadata) to list the features the trajectories hold, in order"
            )
        return names
    name = data.metadata.get("system")
    if name not in SYSTEMS:
        name = system
    if name in SYSTEMS and len(SYSTEMS[name].feature_names) == count:
        return list(SYSTEMS[name].feature_names)
    return None


def feature_mismatch(
    data: TrajectoryDataset, wanted: Sequence[str], system: str | None = None
) -> str | None:
    """None where ``data`` hold every feature of ``wanted`` (by name; data without names
    must hold exactly ``len(wanted)`` features); else what they hold instead, as words for
    an error message ("the features x, y (no vx, vy)" or "3 features, without names")."""
    have = feature_names(data, system)
    if have is None:
        if data.num_features == len(wanted):
            return None
        return f"{data.num_features} features, without names"
    missing = [n for n in wanted if n not in have]
    if not missing:
        return None
    return f"the features {', '.join(have)} (no {', '.join(missing)})"


def select_named_features(
    data: TrajectoryDataset, wanted: Sequence[str], where: str, system: str | None = None
) -> TrajectoryDataset:
    """``data`` cut to the features ``wanted``, in that order, found by their names (see
    :func:`feature_names`; ``system`` names the features of data that name no system).
    Data without names are taken as they are when they hold exactly ``len(wanted)``
    features. ``where`` names the data in the error when they lack some of ``wanted``."""
    wanted = list(wanted)
    problem = feature_mismatch(data, wanted, system)
    if problem is not None:
        name = data.metadata.get("system", system)
        unnamed = "" if feature_names(data, system) is not None else (
            f" (of system {name!r}, whose features have no names)"
        )  # fmt: skip
        raise ValueError(
            f"the model reads the features {', '.join(wanted)}, chosen by name, but {where} "
            f"have {problem}{unnamed}: give data that hold these features, with their names in "
            "the metadata's feature_names, or exactly these features in this order"
        )
    have = feature_names(data, system)
    if have is None:
        return data
    indices = [have.index(n) for n in wanted]
    if indices == list(range(data.num_features)):
        return data
    return data.select_features(indices)
