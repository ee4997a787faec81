"""Reading what a service folder holds: fitted models and tables (CSV or Parquet).

Model files are pickles (joblib or plain): loading one runs whatever the pickle names, so
only compile models you trust. A pickle that needs a module we do not have (a custom
transformer's module, xgboost without the boosters extra) is a user error that names it.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

from compiler.errors import CompileError

BOOSTERS_HINT = "pip install 'apinode[boosters]'"


def load_model(path: Path, where: str) -> tuple[Any, list[str]]:
    """Returns the estimator and the warnings worth showing (version mismatches)."""
    import joblib

    shown: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = joblib.load(path)
        except ModuleNotFoundError as exc:
            hint = ""
            if exc.name and exc.name.split(".")[0] in ("xgboost", "lightgbm"):
                hint = f" (XGBoost and LightGBM models need the boosters extra: {BOOSTERS_HINT})"
            raise CompileError(f"{where}: cannot load {path}: it needs the module {exc.name!r}{hint}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError) as exc:
            raise CompileError(f"{where}: cannot load {path}: not a joblib or pickle file ({exc})") from None
        except (AttributeError, ImportError, TypeError) as exc:
            raise CompileError(
                f"{where}: cannot load {path}: {type(exc).__name__}: {exc} "
                "(was it pickled with classes defined in a script?)"
            ) from None
    for w in caught:
        if type(w.message).__name__ == "InconsistentVersionWarning":
            shown.append(f"{where}: {w.message}")
    return model, shown


def read_table(path: Path, where: str, string_columns: tuple[str, ...] = ()) -> Any:
    """A CSV or Parquet file as a pandas DataFrame; `string_columns` stay strings in a CSV."""
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        header = pd.read_csv(path, nrows=0)
        dtypes = {c: object for c in string_columns if c in header.columns}
        return pd.read_csv(path, dtype=dtypes, keep_default_na=True)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompileError(f"{where}: cannot read {path}: {first}") from None
    except ImportError as exc:
        raise CompileError(f"{where}: cannot read {path}: {exc}") from None
