"""Each category at its own best value: the fair comparison of a crossed sweep.

A sweep that crosses one categorical setting with numeric ones (`optimizer=adam,sgd
lr=1e-2,1e-3`, with seeds) asks which optimizer is better. One shared lr answers that badly:
each optimizer has its own good lr, and "SGD is worse" at Adam's lr is mostly an untuned lr. So
each category is taken at its own best numeric value and the categories are compared there:

- the value is *chosen* on the mean best validation loss of its seeds (`best_val_loss`), among
  the values whose every seed completed (a value that diverged in some seed is no good value;
  only when a category has none are the others considered);
- the categories are *compared* on the test loss at each seed's best-validation epoch
  (`best_test_loss`), with the ranking and Welch verdict of settings.py. The validation numbers
  that chose the value are not reused: the lowest of several noisy means is biased low (the
  winner's curse), more so for a category whose values happen to be noisier. The test images
  took no part in the choice. The seeds' training noise is shared by both splits, so a little
  of that bias remains; a paper can confirm with fresh seeds at the chosen values.

Without a validation split the value is chosen on the very test losses it is compared on: the
comparison is still made, marked `optimistic`, and its sentence says so.

Imports no torch.
"""

from __future__ import annotations

import functools
from typing import Any

from vae_runner.config.overrides import values_by_key
from vae_runner.sweep.settings import rank_key, setting_record, verdict

COMPARED_ON = "best_test_loss"


@functools.cache  # the same few overrides, typed many times per summary
def typed_value(line: str) -> Any:
    """An override's value as Hydra types it: `lr=1e-2` -> 0.01, `optimizer=sgd` -> 'sgd'."""
    try:
        (value,) = values_by_key([line]).values()
        return value
    except Exception:  # an override this Hydra cannot read: its text, a category
        return line


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def crossed_keys(keys: list[tuple]) -> tuple[str, list[str]] | None:
    """(the categorical key, the numeric keys) when the settings cross exactly one varying key
    whose values are not all numbers with at least one varying numeric key, and some category
    was tried at more than one numeric value; else None."""
    settings = [dict(key) for key in dict.fromkeys(keys)]
    names = sorted({name for s in settings for name in s})
    varying = [name for name in names if len({s.get(name) for s in settings}) > 1]
    if not varying or any(name not in s for s in settings for name in varying):
        return None
    numeric = [n for n in varying if all(_is_number(typed_value(s[n])) for s in settings)]
    categorical = [n for n in varying if n not in numeric]
    if len(categorical) != 1 or not numeric:
        return None
    (category,) = categorical
    values: dict[str, set] = {}
    for s in settings:
        values.setdefault(s[category], set()).add(tuple(s[n] for n in numeric))
    return (category, numeric) if max(len(v) for v in values.values()) > 1 else None


def _choose(members: list[dict], chosen_on: str) -> dict | None:
    """The setting with the lowest mean `chosen_on`, among those whose every seed completed
    (else among those with any completed seed); None when none completed."""
    scored = [s for s in members if s["measures"][chosen_on]["mean"] is not None]
    whole = [s for s in scored if s["n_completed"] == s["n_jobs"]]
    pool = whole or scored
    return min(pool, key=lambda s: s["measures"][chosen_on]["mean"]) if pool else None


def _category_record(
    line: str, members: list[dict], key_of: dict, rows_of: dict, numeric: list[str], on: str
) -> dict[str, Any]:
    """One category (`line`, e.g. `optimizer=sgd`) at its chosen value: a setting record of the
    chosen setting's jobs, with what was chosen, from what, and on what."""

    def values(setting: dict) -> dict[str, Any]:
        return {n: typed_value(key_of[setting["label"]][n]) for n in numeric}

    best = _choose(members, on)
    chosen = None if best is None else values(best)
    label = line if best is None else " ".join([line, *(key_of[best["label"]][n] for n in numeric)])
    record = setting_record(label, rows_of[best["label"]] if best else [], [], "test")
    tried = sorted(members, key=lambda s: list(values(s).values()))
    grid = {n: sorted({values(s)[n] for s in members}) for n in numeric}
    record.update(
        category=typed_value(line),
        chosen=chosen,
        setting=None if best is None else best["label"],
        chosen_mean=None if best is None else best["measures"][on]["mean"],
        every_seed_completed=best is not None and best["n_completed"] == best["n_jobs"],
        # the lowest or highest value tried: the best may lie beyond the grid
        at_edge=chosen is not None
        and any(len(g) > 1 and chosen[n] in (g[0], g[-1]) for n, g in grid.items()),
        tried=[
            {
                "setting": s["label"],
                "values": values(s),
                "mean": s["measures"][on]["mean"],
                "n_completed": s["n_completed"],
                "n_jobs": s["n_jobs"],
            }
            for s in tried
        ],
        identical_to=[] if best is None else best["identical_to"],  # settings' labels, for now
    )
    return record


def _sentence(category: str, numeric: list[str], said: dict, records: list, optimistic: bool):
    numbers = " and ".join(numeric)
    how = (
        "chosen on the same test losses they are compared on"
        if optimistic
        else "chosen on the mean best validation loss, compared on the test loss at each "
        "seed's best-validation epoch"
    )
    sentence = f"Each {category} at its own best {numbers} ({how}): {said['sentence']}"
    if optimistic:
        sentence += (
            f" Optimistic: the test set chose each {category}'s {numbers}; choose on a"
            " validation split with data.val_fraction=0.1."
        )
    if said["kind"] == "tied":  # the tie names the best and its equals: say who is behind
        best = next(r for r in records if r["rank"] == 1)["measures"][COMPARED_ON]["mean"]
        behind = [
            f"{r['label']} by {r['measures'][COMPARED_ON]['mean'] - best:.2g} nats "
            f"(p={r['p_vs_best']:.2g})"
            for r in records
            if r["rank"] > 1 and not r["tied_with_best"] and r["p_vs_best"] is not None
        ]
        if behind:
            sentence += f" Behind the best: {', '.join(behind)}."
    edges = [r["label"] for r in records if r["at_edge"]]
    if edges:
        sentence += f" At the edge of the {numbers} tried: {', '.join(edges)}."
    return sentence


def fair_comparison(
    rows: list[dict], keys: list[tuple], settings: list[dict], split: str
) -> dict[str, Any] | None:
    """The `fair_comparison` section of a crossed sweep's summary (None for any other sweep).
    `rows` and `keys` are the job rows and their settings' keys, in the same order; `settings`
    the setting records (settings.setting_record); `split` the split the sweep chose on."""
    found = crossed_keys(keys)
    if found is None:
        return None
    category, numeric = found
    key_of = {row["setting"]: dict(key) for row, key in zip(rows, keys, strict=True)}
    rows_of: dict[str, list[dict]] = {}
    for row in rows:
        rows_of.setdefault(row["setting"], []).append(row)
    by_category: dict[str, list[dict]] = {}
    for s in settings:
        by_category.setdefault(key_of[s["label"]][category], []).append(s)
    on = rank_key(split)
    records = [
        _category_record(line, members, key_of, rows_of, numeric, on)
        for line, members in by_category.items()
    ]
    fair_label = {r["setting"]: r["label"] for r in records if r["setting"] is not None}
    for r in records:  # twins among the chosen settings (AdamW that is Adam) compare nothing
        r["identical_to"] = [fair_label[t] for t in r["identical_to"] if t in fair_label]
    said = verdict(records, "test")
    optimistic = split != "val"
    return {
        "category": category,
        "numeric": numeric,
        "chosen_on": on,
        "compared_on": COMPARED_ON,
        "optimistic": optimistic,
        "verdict": {**said, "sentence": _sentence(category, numeric, said, records, optimistic)},
        "categories": records,
    }
