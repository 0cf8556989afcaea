"""Train widget, fine-tuning part of the *Training set* tab: a new version, Dice before/after, versions.

"Fine-tune" trains a new version of the chosen model on the training set (a ``napari-cxseg
train --from`` subprocess: few epochs, a fine-tuning learning rate, the card's own
preprocessing via ``card_for_training(start=...)``) into ``<cache>/models/<name>/vN``, validates
only after the last epoch (so the held-out entries never choose the weights), then measures the
old and the new version on the same held-out entries with
:func:`~napari_cxseg.training.validation.validate_cases` in a worker. Older versions stay on disk
and "Use this version" points the model's card back at one of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
)

from ._jobs import start_worker
from ._layers import notify_error
from ._train_models import model_events

#: Fraction of the set held out by a fine-tuning run (at least one entry).
HELD_OUT = 0.25


def compare_versions(old_card: Any, new_card_ref: str, root: Path, held_out: list[str], device: str) -> dict:
    """Dice of the old and the new model on the same held-out cases (worker)."""
    from ..models.cards import find_card
    from ..training.sources import find_cases
    from ..training.validation import validate_cases

    keys = set(held_out)
    cases = [c for c in find_cases(root) if c.key in keys]
    new_card = find_card(new_card_ref)
    before = validate_cases(old_card, None, cases, device)
    after = validate_cases(new_card, None, cases, device)
    return {"cases": [c.key for c in cases], "before": before, "after": after, "new": new_card.name,
            "old": old_card.name}


class FineTuneMixin:
    """Fine-tuning controls of :class:`~._train_set_tab.TrainingSetTab` (which provides ``host``,
    ``training_set()``, ``root()``, ``status``, ``compared`` and ``_fail``)."""

    def _build_fine_tune(self) -> QGroupBox:
        box = QGroupBox("Fine-tune on the training set")
        self.model_combo = QComboBox()
        self.ft_name = QLineEdit()
        self.ft_name.setPlaceholderText("versions of (default: the model's own, or <model>-ft)")
        self.ft_epochs = QSpinBox()
        self.ft_epochs.setRange(1, 1000)
        self.ft_epochs.setValue(20)
        self.ft_lr = QDoubleSpinBox()
        self.ft_lr.setDecimals(6)
        self.ft_lr.setRange(1e-6, 1e-1)
        self.ft_lr.setSingleStep(1e-4)
        self.ft_lr.setValue(3e-4)
        self.ft_btn = QPushButton("Fine-tune")
        self.versions_combo = QComboBox()
        self.use_btn = QPushButton("Use this version")
        vrow = QHBoxLayout()
        vrow.addWidget(self.versions_combo, 1)
        vrow.addWidget(self.use_btn)
        ft = QFormLayout(box)
        ft.addRow("Model", self.model_combo)
        ft.addRow("New version of", self.ft_name)
        ft.addRow("Epochs", self.ft_epochs)
        ft.addRow("Learning rate", self.ft_lr)
        ft.addRow(self.ft_btn)
        ft.addRow("Versions", vrow)

        self.ft_btn.clicked.connect(self.fine_tune)
        self.use_btn.clicked.connect(self.use_version)
        self.model_combo.currentTextChanged.connect(lambda *_: self.refresh_versions())
        self.ft_name.editingFinished.connect(self.refresh_versions)
        return box

    def _lineage_name(self) -> str:
        from ..models.cards import find_card
        from ..training.versions import lineage

        if self.ft_name.text().strip():
            return self.ft_name.text().strip()
        model = self.model_combo.currentText()
        try:
            return lineage(find_card(model)) or f"{model}-ft"
        except Exception:
            return f"{model}-ft"

    def fine_tune(self) -> bool:
        """Train a new version of the chosen model on the set (subprocess), then compare on held-out entries."""
        from ..models.cards import find_card
        from ..training.sources import split_cases
        from ..training.versions import check_name, next_version_dir

        model = self.model_combo.currentText()
        try:
            card = find_card(model)
            tset = self.training_set()
            if len(tset) < 2:
                raise ValueError(f"the training set has {len(tset)} case(s); fine-tuning needs at least 2 "
                                 "(at least one is held out to measure the Dice before and after)")
            if tset.spatial_dims != card.spatial_dims:
                raise ValueError(f"{model} is a {card.spatial_dims}D model; the set holds "
                                 f"{tset.spatial_dims}D cases")
            name = check_name(self._lineage_name())
            train, val = split_cases(tset.cases(), HELD_OUT, seed=0)
        except Exception as exc:
            self._fail(f"Cannot fine-tune {model}: {exc}")
            return False
        epochs = self.ft_epochs.value()
        vdir = next_version_dir(name)
        ref = str(card.path or card.bundle_dir or model)
        args = ["--data", str(tset.root), "--out", str(vdir), "--name", name, "--from", ref,
                "--epochs", str(epochs), "--lr", f"{self.ft_lr.value():g}",
                "--batch", str(max(1, min(2, len(train)))), "--val-split", str(HELD_OUT),
                "--val-every", str(epochs), "--device", self.host.device_combo.currentText()]
        self.status.setText(f"Fine-tuning {model} on {len(train)} case(s), {len(val)} held out"
                            + (" (a very small set: one case held out)" if len(val) == 1 else "") + "...")
        job = {"kind": "fine-tune", "name": name, "vdir": vdir, "data": str(tset.root), "started_from": model}
        return self.host.start_run(args, job, on_done=lambda ev: self._compare(card, ev, job))

    def _compare(self, old_card: Any, ev: dict[str, Any], job: dict[str, Any]) -> None:
        held = list((self.host._job.get("start") or {}).get("val", []))
        name = job["name"]
        if not held:
            self.status.setText("No held-out case: nothing to compare.")
            return
        if self.model_combo.findText(name) >= 0:
            self.model_combo.setCurrentText(name)
        self.status.setText(f"Measuring {old_card.name} and {name} on {len(held)} held-out case(s)...")
        self._worker = start_worker(compare_versions, old_card, ev.get("card") or name, self.root(), held,
                                    self.host.device_combo.currentText(),
                                    on_done=lambda res: self._show_comparison(res, job),
                                    on_error=lambda e: self._fail(f"Measuring the held-out Dice failed: {e}"))

    def _show_comparison(self, res: dict[str, Any], job: dict[str, Any]) -> None:
        from ..training import versions

        b, a = res["before"], res["after"]
        per = ", ".join(f"{k} {b['per_class'].get(k, float('nan')):.3f} -> {v:.3f}" for k, v in a["per_class"].items())
        text = (f"Held-out Dice ({len(res['cases'])} case(s): {', '.join(c.split('/')[-1] for c in res['cases'])}): "
                f"{res['old']} {b['dice']:.4f} -> {res['new']} {Path(job['vdir']).name} {a['dice']:.4f} ({per}).")
        self.status.setText(text)
        self.host.result.setText(self.host.result.text() + "\n" + text)
        try:
            versions.record(job["name"], job["vdir"], dice_before=b["dice"], dice_after=a["dice"],
                            per_class_before=b["per_class"], per_class_after=a["per_class"], held_out=res["cases"],
                            metrics={"held_out_dice_before": round(b["dice"], 4),
                                     "held_out_dice_after": round(a["dice"], 4)})
        except Exception as exc:
            notify_error(exc, f"Recording the comparison in {job['vdir']}")
        self.refresh_versions()
        self.compared.emit(res)

    # ------------------------------------------------------------------ versions
    def refresh_versions(self) -> None:
        """List the finished versions of the model's lineage."""
        from ..training import versions

        self.versions_combo.clear()
        try:
            name = versions.check_name(self._lineage_name())
            log = {r.get("version"): r for r in versions.read_log(name)}
            for _, vdir in versions.version_dirs(name):
                if versions.finished(vdir):
                    r = log.get(vdir.name, {})
                    d = r.get("dice_after", r.get("best_dice"))
                    self.versions_combo.addItem(f"{name} {vdir.name}" + (f" (Dice {d:.3f})" if d is not None else ""),
                                                str(vdir))
        except Exception:  # no lineage yet
            pass
        self.use_btn.setEnabled(self.versions_combo.count() > 0)

    def use_version(self) -> None:
        """Point the model's card at the chosen version (e.g. back to an older one)."""
        from ..training import versions

        vdir = self.versions_combo.currentData()
        if not vdir:
            return
        name = Path(vdir).parent.name
        try:
            versions.use_version(name, Path(vdir))
        except Exception as exc:
            self._fail(f"Cannot use {vdir}: {exc}")
            return
        self.status.setText(f"Model '{name}' now runs version {Path(vdir).name}.")
        model_events().changed.emit(name)

