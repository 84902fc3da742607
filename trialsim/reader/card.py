"""The reader's model card: what it was trained on, what it is for, its limits."""

from __future__ import annotations

from ..protocol import Protocol


def _group_table(held: dict) -> str:
    rows = ["| group | precision | recall | F1 | mean count error |", "|---|---|---|---|---|"]
    for g in held.get("by_group", []):
        rows.append(
            f"| {g['group']} | {g['precision'] or float('nan'):.2f} | {g['recall'] or float('nan'):.2f} | "
            f"{g['f1'] or float('nan'):.2f} | {g.get('count_error_mean', float('nan')):+.2f} |"
        )
    return "\n".join(rows)


def _input_words(kind: str) -> str:
    if kind == "haemoglobin":
        return "the skin's haemoglobin contrast (blind to light, shading and melanin) and counting on the skin only"
    return "the photo's colours, each channel standardised"


def model_card(config: dict, record: dict, protocol: Protocol) -> str:
    """Markdown text of ``MODEL_CARD.md`` for a reader folder."""
    held = record.get("held_out", {})
    opts = record["options"]
    r = protocol.rendering
    return f"""# trialsim sim-reader

**What it is.** A small convolutional network that reads a skin photo and gives a lesion density map per
group ({", ".join(config["groups"])}; their sums are lesion counts) and an acne severity on the 0–3 scale.
Used by `trialsim analyze DATASET --method sim-reader --reader THIS_FOLDER`.

**Trained on** {config["trained_on"]["photos"]} simulated photos only (protocol `{protocol.name}`: renderer
`{r.renderer}`, style `{r.style}`, view `{r.view}`, photo conditions at strength {r.nuisance}, rendered at
{r.image_size} px and read at {config["image_size"]} px), seed {config["seed"]}, {opts["epochs"]} epochs on
{opts["crop"]}-px crops, reading {_input_words(config.get("input", "rgb"))}. No real photo was used. Targets: the simulator's latent severity and every visible lesion
(intensity ≥ 0.3) at its place in the photo.

**Held-out simulated photos** ({held.get("photos", 0)} photos of people not trained on): severity RMSE
{held.get("severity_rmse", float("nan")):.3f}, Spearman {held.get("severity_spearman", float("nan")):.3f}.

{_group_table(held)}

**What it is for.** Embedding trial photos for the analysis (severity and counts, then PC1 and the same
models as the other methods), and checking how much of what real photos carry the simulated photos carry.

**Limits.** It knows only what the renderer draws: lesions as the procedural renderer shapes them, its skin
types and photo conditions. On real photos its counts are not calibrated counts of real lesions; its
severity is not an expert's grade. It has seen no tattoos, make-up, beards, scars other than acne marks,
or body sites other than the face. Check it on real photos with scores before trusting it.

Rebuild: `trialsim train-reader {opts["protocol"]} --out DIR --photos {opts["photos"]} --seed {opts["seed"]}
--input {config.get("input", "rgb")}`.
"""
