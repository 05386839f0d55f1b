"""``slimline distill``: train a student from a teacher (knowledge distillation), one command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from slimline.cli.app import JSON_OPTION, app, dump_json, friendly
from slimline.cli.common import DOWNLOAD_OPTION, TRUST_CODE_OPTION, data_section, preprocess_option
from slimline.progress import console


@app.command()
@friendly
def distill(
    teacher: str = typer.Option(..., "--teacher", "-t", help="zoo name, package.module:factory or artifact folder"),
    student: str = typer.Option(..., "--student", "-s", help="zoo name, package.module:factory or artifact folder"),
    data: str = typer.Option(..., "--data", "-d", help="dataset name"),
    teacher_weights: Path | None = typer.Option(None, help="teacher weights (state_dict or checkpoint)"),
    student_weights: Path | None = typer.Option(None, help="start the student from these weights"),
    temperature: float = typer.Option(4.0, "--temperature", "-T", min=0.0, help="softmax temperature T"),
    alpha: float = typer.Option(0.9, min=0.0, max=1.0, help="weight of the soft (teacher) term; 1-alpha on labels"),
    epochs: int = typer.Option(5, min=1),
    lr: float = typer.Option(0.05),
    batch_size: int = typer.Option(128, min=1),
    optimizer: str = typer.Option("sgd", help="sgd or adamw"),
    schedule: str = typer.Option("cosine", help="cosine or constant"),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="random crops/flips of the dataset"),
    cache: str = typer.Option("auto", help="cache teacher logits per sample: auto (when not augmenting), on, off"),
    hint_student_layer: str | None = typer.Option(None, help="feature distillation: student layer, e.g. features.10"),
    hint_teacher_layer: str | None = typer.Option(None, help="feature distillation: teacher layer"),
    hint_weight: float = typer.Option(1.0, min=0.0, help="weight of the feature (hint) loss"),
    seed: int = typer.Option(0),
    val_size: float = typer.Option(0.1, help="validation slice of the training data (fraction, or count if >= 1)"),
    limit: int | None = typer.Option(None, min=1, help="use only the first N training samples"),
    test: bool = typer.Option(True, "--test/--no-test", help="evaluate the student on the test split at the end"),
    data_dir: Path | None = typer.Option(None, help="where the dataset lies"),
    preprocess: str | None = preprocess_option(),
    download: bool = DOWNLOAD_OPTION,
    trust_code: bool = TRUST_CODE_OPTION,
    output: Path = typer.Option(Path("runs/distill"), "--output", "-o", help="run folder"),
    json_path: Path | None = JSON_OPTION,
) -> None:
    """Distil a teacher into a student: alpha*T^2*KL(teacher||student) + (1-alpha)*CE, resumable.

    Example: slimline distill -t small_cnn --teacher-weights teacher.pt -s small_cnn_half -d fashion-mnist --epochs 4

    Rerunning the same command after an interruption resumes from the last epoch's checkpoint.
    JSON keys: the run's results (stages[1].record holds teacher/student MACs, val accuracy, history).
    """
    from slimline.api import run as run_api
    from slimline.errors import SlimlineError

    if cache not in ("auto", "on", "off"):
        raise SlimlineError(f"--cache must be auto, on or off, not {cache!r}")
    if (hint_student_layer is None) != (hint_teacher_layer is None):
        raise SlimlineError("feature distillation needs both --hint-student-layer and --hint-teacher-layer")
    teacher_ref, student_ref = _ref(teacher, teacher_weights), _ref(student, student_weights)
    # The run's baseline (its first artifact) must be a model slimline can build: the teacher when it is
    # a zoo/factory model (the evaluate step then also reports the student's agreement with it), else the student.
    teacher_first = not _is_artifact(teacher)
    if not teacher_first and _is_artifact(student):
        raise SlimlineError(
            "give at least one of --teacher/--student as a zoo name or package.module:factory; "
            "to distil between two saved artifacts, write a recipe with a distill step"
        )
    options: dict[str, Any] = {
        "temperature": temperature,
        "alpha": alpha,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "schedule": schedule,
        "augment": augment,
        "cache": {"auto": "auto", "on": True, "off": False}[cache],
    }
    options["student" if teacher_first else "teacher"] = student_ref if teacher_first else teacher_ref
    if hint_student_layer is not None:
        options["hint"] = {
            "student_layer": hint_student_layer,
            "teacher_layer": hint_teacher_layer,
            "weight": hint_weight,
        }
    steps: list[dict[str, Any]] = [{"distill": options}]
    if test:
        steps.append({"evaluate": {"split": "test", "fidelity": teacher_first}})
    recipe = {
        "name": "distill",
        "model": teacher_ref if teacher_first else student_ref,
        "data": data_section(
            data, data_dir, train_limit=limit, val_size=val_size, download=download, preprocess=preprocess
        ),
        "seed": seed,
        "steps": steps,
        "output_dir": str(output),
    }
    results = run_api(recipe, trust_code=trust_code)
    rec = results["stages"][1]["record"]
    t, s = rec["teacher"], rec["student"]
    console.print(
        f"teacher {t['macs'] / 1e6:.1f}M MACs, val top-1 {t['val']['top1']:.2f}% (n={t['val']['n']}); "
        f"student {s['macs'] / 1e6:.1f}M MACs, val top-1 {rec['val_before']['top1']:.2f}% -> "
        f"{rec['val']['top1']:.2f}% (n={rec['val']['n']})",
        highlight=False,
    )
    if test:
        m = results["stages"][2]["record"]["metrics"]
        lo, hi = m["top1_ci95"]
        line = f"student test top-1 {m['top1']:.2f}% (95% CI {lo:.1f}–{hi:.1f}, n={m['n']})"
        if "top1_agreement" in m:
            line += f", top-1 agreement with the teacher {m['top1_agreement']:.2f}%"
        console.print(line, highlight=False)
    console.print(f"student artifact: [bold]{output / results['final_artifact']}[/]")
    dump_json(json_path, results)


def _is_artifact(name: str) -> bool:
    return Path(name).is_dir()


def _ref(name: str, weights: Path | None) -> dict[str, Any]:
    if _is_artifact(name):
        return {"name": str(Path(name).resolve())}
    return {"name": name, "weights": str(weights) if weights else None}
