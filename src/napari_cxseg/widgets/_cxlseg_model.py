"""A lazy Qt table model over a CXLSeg pandas table (243k rows open in seconds).

Nothing is copied per row: the model holds the frame and an index array of the rows that pass
the filters; ``data()`` reads a cell only when the view asks for it (visible rows), and the
findings text of a row is made then and cached.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt

COLUMNS = ("dicom_id", "subject_id", "study_id", "split", "view", "findings")


class CXLSegTableModel(QAbstractTableModel):
    """Rows of a CXLSeg table (:func:`napari_cxseg.cxlseg.browse_table`) through a filter."""

    def __init__(self, table: Any = None, parent: Any = None):
        super().__init__(parent)
        self._table = None
        self._rows = np.zeros(0, np.int64)
        self._findings: list[str] = []
        self._text: dict[int, str] = {}
        if table is not None:
            self.set_table(table)

    # ------------------------------------------------------------------ data
    def set_table(self, table: Any) -> None:
        """Show a new table (all rows)."""
        from ..cxlseg import finding_columns

        self.beginResetModel()
        self._table = table
        self._findings = finding_columns(table)
        self._rows = np.arange(len(table), dtype=np.int64)
        self._text = {}
        self.endResetModel()

    def set_rows(self, rows: np.ndarray) -> None:
        """Show only these table positions (from :func:`napari_cxseg.cxlseg.filter_rows`)."""
        self.beginResetModel()
        self._rows = np.asarray(rows, np.int64)
        self.endResetModel()

    @property
    def table(self) -> Any:
        return self._table

    @property
    def formatted_rows(self) -> int:
        """How many rows had their findings text made (stays small: the model is lazy)."""
        return len(self._text)

    def table_row(self, row: int) -> int:
        """The table position of a view row."""
        return int(self._rows[row])

    def view_row(self, table_pos: int) -> int | None:
        """The view row of a table position (None when filtered out)."""
        hit = np.flatnonzero(self._rows == table_pos)
        return int(hit[0]) if hit.size else None

    def record(self, row: int) -> dict[str, Any]:
        """The table's row (all columns) behind view row ``row``."""
        return self._table.iloc[self.table_row(row)].to_dict()

    # ------------------------------------------------------------------ Qt API
    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008, N802 - Qt API
        return 0 if parent.isValid() or self._table is None else int(self._rows.size)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008, N802 - Qt API
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Any, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section] if section < len(COLUMNS) else None
        return str(section + 1)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return None
        pos = self.table_row(index.row())
        col = COLUMNS[index.column()]
        if col == "findings":
            return self._findings_text(pos)
        v = self._table[col].iat[pos]
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)

    def _findings_text(self, pos: int) -> str:
        text = self._text.get(pos)
        if text is None:
            from ..cxlseg import positive_findings

            row = {c: self._table[c].iat[pos] for c in self._findings}
            text = positive_findings(row, self._findings)
            self._text[pos] = text
        return text
