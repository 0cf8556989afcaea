"""Train widget, *Next case* tab: rank unlabelled images by the model's uncertainty, open the top one.

Scoring runs in a napari generator worker (one image per step; Cancel is honoured between
images); the scores are kept in ``<training set>/next_case_ranking.json``
(:class:`napari_cxseg.training.uncertainty.Ranking`), keyed by file and model identity, so a
restart scores only what is new. "Open next case" skips images already opened or in the
training set.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ._jobs import create_job, start_worker
from ._layers import fill_combo

if TYPE_CHECKING:
    from .train import TrainWidget

RANKING_FILE = "next_case_ranking.json"


def _score_job(source: str, card: Any, ranking_path: Path, method: str, device: str):
    """Generator for a worker: yields ``("items", items)`` then ``(done, total, item, score, error)``."""
    from ..training.uncertainty import Ranking, score_items, unlabelled_items

    items = unlabelled_items(source)
    yield "items", items
    ranking = Ranking(ranking_path)
    n = yield from score_items(card, items, ranking, method=method, device=device)
    return n


class NextCaseTab(QWidget):
    """Rank unlabelled images by uncertainty and open the one the model is least sure about."""

    #: emitted with the number of images scored when a scoring run ends
    scored = Signal(int)
    #: emitted with ``(item, score)`` when a case was opened
    opened = Signal(object, float)

    def __init__(self, host: TrainWidget):
        super().__init__()
        self.host = host
        self.viewer = host.viewer
        self._worker = None
        self._items: list[Any] = []
        self._errors: list[str] = []

        self.source_edit = QLineEdit()
        self.source_edit.setPlaceholderText("folder, CSV or CXLSeg dataset of unlabelled images")
        browse = QPushButton("Folder...")
        browse_csv = QPushButton("CSV...")
        row = QHBoxLayout()
        row.addWidget(self.source_edit, 1)
        row.addWidget(browse)
        row.addWidget(browse_csv)
        self.model_combo = QComboBox()
        self.method_combo = QComboBox()
        self.method_combo.addItems(["entropy", "dropout"])
        self.method_combo.setToolTip("entropy: mean predictive entropy; dropout: MC-dropout variance "
                                     "(networks with dropout layers only)")
        self.score_btn = QPushButton("Score images")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["rank", "uncertainty", "image"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setMinimumHeight(120)
        self.open_btn = QPushButton("Open next case")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.score_btn)
        buttons.addWidget(self.cancel_btn)
        form = QFormLayout()
        form.addRow("Images", row)
        form.addRow("Model", self.model_combo)
        form.addRow("Score", self.method_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.table)
        layout.addWidget(self.open_btn)
        layout.addWidget(self.status)

        browse.clicked.connect(self._browse)
        browse_csv.clicked.connect(self._browse_csv)
        self.score_btn.clicked.connect(self.score)
        self.cancel_btn.clicked.connect(self.cancel)
        self.open_btn.clicked.connect(self.open_next)

    def _browse(self) -> None:  # pragma: no cover - needs a human
        path = QFileDialog.getExistingDirectory(self, "Folder of unlabelled images")
        if path:
            self.source_edit.setText(path)

    def _browse_csv(self) -> None:  # pragma: no cover - needs a human
        path, _ = QFileDialog.getOpenFileName(self, "CSV of images", "", "CSV (*.csv)")
        if path:
            self.source_edit.setText(path)

    def refresh_models(self, names: list[str]) -> None:
        """Fill the model list (cards changed)."""
        fill_combo(self.model_combo, names)

    def ranking_path(self) -> Path:
        """``<training set>/next_case_ranking.json``."""
        return self.host.set_tab.root() / RANKING_FILE

    def _card(self) -> Any:
        from ..images import CxsegError
        from ..models.cards import find_card

        name = self.model_combo.currentText().strip()
        if not name:
            raise CxsegError("choose the model whose uncertainty ranks the images")
        return find_card(name)

    # ------------------------------------------------------------------ scoring
    def score(self) -> bool:
        """Score the images the ranking lacks for the chosen model (worker)."""

        source = self.source_edit.text().strip()
        if not source:
            self._fail("Choose a folder, CSV or CXLSeg dataset of images to rank.")
            return False
        try:
            card = self._card()
        except Exception as exc:
            self._fail(f"Cannot score with '{self.model_combo.currentText()}': {exc}")
            return False
        self._errors = []
        worker = create_job(_score_job, source, card, self.ranking_path(), self.method_combo.currentText(),
                               self.host.device_combo.currentText(), _ignore_errors=True)
        worker.yielded.connect(self._on_step)
        worker.returned.connect(lambda n: self.scored.emit(int(n or 0)))
        worker.errored.connect(lambda e: self._fail(f"Scoring {source} failed: {e}"))
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.score_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText(f"Listing {source}...")
        worker.start()
        return True

    def cancel(self) -> None:
        """Stop scoring after the current image (scores so far are kept)."""
        if self._worker is not None:
            self._worker.quit()

    def _on_step(self, step: Any) -> None:
        if step[0] == "items":
            self._items = list(step[1])
            self.status.setText(f"{len(self._items)} images; scoring those without a score for this model...")
            return
        done, total, item, score, error = step
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        if error:
            self._errors.append(error)
        elif done % 10 == 0:
            self.refresh_table()

    def _on_finished(self) -> None:
        self._worker = None
        self.score_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        n = self.refresh_table()
        text = (f"{n} of {len(self._items)} images left to correct (the others are opened or in the training "
                f"set), ranked by {self.model_combo.currentText()}.")
        if self._errors:
            text += f" {len(self._errors)} could not be scored: {self._errors[0]}"
        self.status.setText(text)

    # ------------------------------------------------------------------ ranking
    def ranked(self) -> list[tuple[Any, float]]:
        """Scored images for the chosen model, most uncertain first, without opened or added ones."""
        from ..training.trainset import TrainingSet
        from ..training.uncertainty import Ranking, model_identity

        ranking = Ranking(self.ranking_path())
        try:
            in_set = {e.key for e in TrainingSet(self.host.set_tab.root()).entries()}
        except Exception:
            in_set = set()
        skip = [*ranking.opened, *(it.key for it in self._items
                                   if f"file:{Path(it.path).expanduser().resolve()}" in in_set)]
        return ranking.ranked(self._items, model_identity(self._card()), skip)

    def refresh_table(self) -> int:
        """Show the ranking; returns how many images it holds."""
        try:
            rows = self.ranked()
        except Exception:
            rows = []
        self.table.setRowCount(len(rows))
        for i, (it, s) in enumerate(rows):
            for j, v in enumerate((str(i + 1), f"{s:.4f}", str(it.path))):
                self.table.setItem(i, j, QTableWidgetItem(v))
        return len(rows)

    def open_next(self) -> bool:
        """Open the image the model is least sure about (not opened before, not in the training set)."""
        from ..training.uncertainty import read_item

        if not self._items and self.source_edit.text().strip():
            try:
                from ..training.uncertainty import unlabelled_items

                self._items = unlabelled_items(self.source_edit.text().strip())
            except Exception as exc:
                self._fail(f"{exc}")
                return False
        try:
            rows = self.ranked()
        except Exception as exc:
            self._fail(f"Cannot rank: {exc}")
            return False
        if not rows:
            self._fail(f"No scored image left for {self.model_combo.currentText()}: press 'Score images' "
                       "(or every image was opened or added already).")
            return False
        item, score = rows[0]
        self.status.setText(f"Opening {item.path} ...")
        self._worker_open = start_worker(read_item, item, on_done=lambda img: self._show(img, item, score, len(rows)),
                                         on_error=lambda e: self._fail(f"Opening {item.path} failed: {e}"))
        return True

    def _show(self, image: Any, item: Any, score: float, n: int) -> None:
        from napari.utils.notifications import show_info

        from ..layers import image_layer_data
        from ..training.uncertainty import Ranking

        data, kw, _ = image_layer_data(image, name=item.stem)
        self.viewer.add_image(data, **kw)
        ranking = Ranking(self.ranking_path())
        ranking.mark_opened(item)
        ranking.save()
        text = (f"Next case: {item.stem}, uncertainty {score:.4f} (the highest of {n} not yet corrected, "
                f"model {self.model_combo.currentText()}). Segment it, correct it, add it to the training set.")
        self.status.setText(text)
        show_info(text)
        self.refresh_table()
        self.opened.emit(item, float(score))

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(message)
        show_error(message)
